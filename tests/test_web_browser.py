"""The status page in a real browser (Debian's chromium, headless, driven by selenium) against a real daemon.

The daemon runs in this test's event loop with a simulated Modbus TCP meter, the
simulated driver, the local store and an MQTT sink on a real Mosquitto. Selenium
calls block, so they run on a worker thread (``browse``) while the daemon goes on.
Screenshots are kept under the test's tmp dir or $GATEWAY_TEST_ARTIFACTS (paths printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By

from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.slow
T = TypeVar("T")
POLL_S = 1.0  # the Modbus meter's poll interval


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium chromium-driver; scripts/test)")
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--window-size=1280,1500"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


async def browse(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking browser call on a thread; again if the page re-rendered under it (it does every second)."""
    for _ in range(20):
        try:
            return await asyncio.to_thread(fn, *args)
        except StaleElementReferenceException:
            await asyncio.sleep(0.05)
    return await asyncio.to_thread(fn, *args)


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (a blocking browser query, run on a thread) until it is truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await asyncio.to_thread(predicate)
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.1f}s: {what}")
        await asyncio.sleep(0.1)


def config_text(tmp_path: Path, web_port: int, modbus_port: int, mqtt_port: int) -> str:
    return f"""
[gateway]
site = "harbour-district"
name = "gw-07"
state_dir = "{tmp_path / "state"}"
[buffer]
flush_interval = "100ms"
sync = "normal"
[metrics]
enabled = false
[web]
listen = "127.0.0.1:{web_port}"
history_step = "1s"

[[sources]]
driver = "modbus"
name = "streetlight-cabinet"
transport = "tcp"
host = "127.0.0.1"
port = {modbus_port}
interval = "{POLL_S}s"
timeout = "300ms"
retries = 0
backoff_max = "1s"
devices = [{{ name = "meter-streetlights", unit_id = 1, profile = "eastron-sdm120" }}]

[[sources]]
driver = "simulated"
name = "virtual-street"
interval = "1s"
devices = [{{ name = "park-weather", kind = "weather" }}]

[[sinks]]
type = "local"

[[sinks]]
type = "mqtt"
name = "city-broker"
host = "127.0.0.1"
port = {mqtt_port}
timeout = "2s"
"""


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    sim = ModbusSimulator(devices_from_profiles({1: "eastron-sdm120"}))
    modbus_port = await sim.serve_tcp("127.0.0.1", 0)
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    web_port = free_port()
    path = tmp_path / "gw.toml"
    path.write_text(config_text(tmp_path, web_port, modbus_port, broker.port))
    daemon = Daemon(load_config(path), serve_metrics=False, serve_web=True)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    try:
        yield {"daemon": daemon, "task": task, "sim": sim, "broker": broker, "url": f"http://127.0.0.1:{web_port}/"}
    finally:
        daemon.request_stop()
        await task
        await sim.close()
        broker.close()


def api(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=5) as answer:
        return json.loads(answer.read())


def polyline_points(driver: Any, css: str) -> int:
    found = driver.find_elements(By.CSS_SELECTOR, css + " polyline")
    return len(found[0].get_attribute("points").split()) if found else 0


def shoot(driver: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot kept as a test artifact: under $GATEWAY_TEST_ARTIFACTS if set (CI), else the test's tmp dir."""
    folder = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"web-{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


async def test_the_page_shows_devices_values_plots_outages_and_a_stopped_daemon(
    site: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    url, sim, daemon = site["url"], site["sim"], site["daemon"]
    await browse(browser.get, url)

    # The devices and their current values appear.
    meter = '[data-device="meter-streetlights"]'
    await wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, meter + ' [data-series$="/voltage"] .val'),
                     10, "the meter's voltage on the page")  # fmt: skip
    voltage = await browse(
        lambda: browser.find_element(By.CSS_SELECTOR, meter + ' [data-series$="/voltage"] .val').text
    )
    assert 200 < float(voltage) < 260
    # Up, once any transient timeout is over: the source's 300 ms timeout can fire once on a loaded 2-core CI box
    # (chromium, the simulator and the daemon share it), and the page then shows it down until the next poll.
    await wait_until(lambda: browser.find_element(By.CSS_SELECTOR, meter).get_attribute("data-state") == "up",
                     5, "the meter shown up")  # fmt: skip
    assert "park-weather" in await browse(lambda: browser.find_element(By.ID, "source-list").text)
    header = await browse(lambda: browser.find_element(By.ID, "head").text)
    assert "harbour-district" in header and "gw-07" in header

    # A sparkline renders with as many points as the API gave the page (it grows: bracket the page's fetch).
    spark = 'svg.spark[data-series="streetlight-cabinet/meter-streetlights/voltage"]'
    series_id = "streetlight-cabinet/meter-streetlights/voltage"
    await wait_until(lambda: polyline_points(browser, spark) >= 3, 20, "a sparkline with 3 points")
    before = len((await browse(api, url, "api/sparklines"))["series"][series_id])
    drawn = await browse(polyline_points, browser, spark)
    after = len((await browse(api, url, "api/sparklines"))["series"][series_id])
    assert before - 10 <= drawn <= after  # the page fetched at most 10 s (its refresh period) before `before`
    assert drawn == int(await browse(lambda: browser.find_element(By.CSS_SELECTOR, spark).get_attribute("data-points")))

    # A click opens the large plot; it draws exactly the points the API gives for its time range.
    await browse(lambda: browser.find_element(By.CSS_SELECTOR, f'.q[data-series="{series_id}"]').click())
    plot = await wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#plot svg.plot polyline"), 10, "the plot")
    assert plot
    svg = "#plot svg.plot"
    frm, to = await browse(
        lambda: [browser.find_element(By.CSS_SELECTOR, svg).get_attribute(a) for a in ("data-from", "data-to")]
    )
    await asyncio.sleep(0.5)  # readings stamped before `to` may still be in a flush when the page asked
    answer = await browse(
        api, url, f"api/series/points?source=streetlight-cabinet&device=meter-streetlights&quantity=voltage"
        f"&from={frm}&to={to}"
    )  # fmt: skip
    assert answer["origin"] == "local store"
    drawn_big = await browse(polyline_points, browser, "#plot svg.plot")
    assert drawn_big >= 3 and abs(drawn_big - len(answer["points"])) <= 1  # at most the one in flight
    await browse(lambda: browser.find_element(By.CSS_SELECTOR, '#zoom button[data-range="21600"]').click())
    await wait_until(lambda: "on" in browser.find_element(By.CSS_SELECTOR, '#zoom button[data-range="21600"]')
                     .get_attribute("class"), 5, "the 6 h zoom")  # fmt: skip
    shoot(browser, tmp_path, "1-plot")
    await browse(lambda: browser.find_element(By.ID, "modal-close").click())
    await wait_until(lambda: shoot(browser, tmp_path, "2-all-good"), 5, "a screenshot")

    # The meter stops answering: red within its poll interval plus 2 s, with the reason in words.
    sim.fault(1).silent = True
    await wait_until(lambda: browser.find_element(By.CSS_SELECTOR, meter).get_attribute("data-state") == "down",
                     POLL_S + 2, "the silent meter shown down")  # fmt: skip
    text = await browse(lambda: browser.find_element(By.CSS_SELECTOR, meter).text)
    assert "down since" in text
    overall = await browse(lambda: browser.find_element(By.ID, "overall").get_attribute("class"))
    assert "red" in overall
    await wait_until(lambda: "device meter-streetlights down" in browser.find_element(By.ID, "reasons").text,
                     3, "the reason in the header")  # fmt: skip

    # The city broker goes away too: the sink shows failing, its backlog grows, "not draining".
    site["broker"].stop()
    sink = '[data-sink="city-broker"]'
    await wait_until(lambda: "failing" in browser.find_element(By.CSS_SELECTOR, sink).text, 15, "the sink failing")
    await wait_until(lambda: "not draining" in browser.find_element(By.CSS_SELECTOR, sink).text, 10, "not draining")
    backlog = f"{sink} td:nth-child(4)"
    first = int((await browse(lambda: browser.find_element(By.CSS_SELECTOR, backlog).text)).split()[0])
    await wait_until(lambda: int(browser.find_element(By.CSS_SELECTOR, backlog).text.split()[0]) >= first + 30,
                     10, "the sink's backlog growing")  # fmt: skip
    shoot(browser, tmp_path, "3-device-down-and-sink-outage")

    # The meter answers again: back to up within the retry backoff (1 s) plus its interval plus 2 s.
    sim.fault(1).silent = False
    await wait_until(lambda: browser.find_element(By.CSS_SELECTOR, meter).get_attribute("data-state") == "up",
                     1 + POLL_S + 2, "the meter up again")  # fmt: skip
    site["broker"].start()
    await wait_until(lambda: "delivering" in browser.find_element(By.CSS_SELECTOR, sink).text, 30, "the sink back")

    # The daemon stops: the page says so, and keeps the last values.
    daemon.request_stop()
    await site["task"]
    await wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-stale") == "1",
                     4, "the page noticing the stopped daemon")  # fmt: skip
    banner = await browse(lambda: browser.find_element(By.ID, "stale").text)
    assert "not answering" in banner
    assert await browse(lambda: browser.find_element(By.ID, "overall").text.lower()) == "no contact"
    shoot(browser, tmp_path, "4-daemon-stopped")
