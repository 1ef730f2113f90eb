"""The dashboard in a real headless browser (Debian's Chromium, driven by selenium + chromedriver).

Starts a real quicft-server (HTTP API with a token, plain MQTT on loopback), starts uploads with a
raw MQTT client (paho-mqtt): one that stays in progress, with a device-chosen file name that is
markup, from a client whose id is markup too; and one finished file. Then opens the page, is asked
for the token, enters a wrong one then the right one, and checks what it shows: the transfer with
its progress and held ranges, the names as text (nothing injected, no alert), the clients by
transport, the counters, a live refresh, a download with the token, and that a reload in the same
tab keeps the token. Writes a screenshot. Every connection is to 127.0.0.1.

Usage: dashboard_test.py --server PATH/quicft-server --screenshot target/dashboard.png
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "browser-test-token-0123456789abcdef"
XSS_NAME = "<img src=x onerror=alert(1)>.bin"
XSS_CLIENT = 'dev-"><svg onload=alert(2)>'
FINISHED_NAME = "report <b onmouseover=alert(3)>2.txt"  # no "/": a name with one is refused
SIZE = 1024 * 1024
SEG = 128 * 1024

results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not detail else ": " + str(detail)), flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Device:
    """A raw MQTT 5 client speaking the $file protocol, reading every PUBACK reason code."""

    def __init__(self, port, client_id):
        self.codes = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port, keepalive=60)
        self.c.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.codes[mid] = reason_code.value
            self.cond.notify_all()

    def publish(self, topic, payload):
        """Publishes at QoS 1 and returns the PUBACK reason code."""
        info = self.c.publish(topic, payload, qos=1)
        with self.cond:
            if not self.cond.wait_for(lambda: info.mid in self.codes, timeout=30):
                raise RuntimeError("no PUBACK for " + topic)
            return self.codes.pop(info.mid)

    def init(self, file_id, name, size):
        return self.publish(f"$file/{file_id}/init", json.dumps({"name": name, "size": size}))

    def segment(self, file_id, offset, data):
        return self.publish(f"$file/{file_id}/{offset}/{hashlib.sha256(data).hexdigest()}", data)

    def fin(self, file_id, data):
        return self.publish(f"$file/{file_id}/fin/{len(data)}/{hashlib.sha256(data).hexdigest()}", b"")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    return False


def start_browser(profile, downloads):
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1100",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(a)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": downloads, "download.prompt_for_download": False},
    )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    # Headless Chromium saves downloads only where it is told to.
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver


def no_alert(driver):
    try:
        a = driver.switch_to.alert
        text = a.text
        a.dismiss()
        return "alert: " + text
    except NoAlertPresentException:
        return None


def run(args, work):
    http_port, tcp_port = free_port(), free_port()
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    data_dir = os.path.join(work, "data")
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.server, "--data-dir", data_dir, "--quic", "off", "--tls", "off", "--ws", "off", "--wss", "off",
         "--tcp", f"127.0.0.1:{tcp_port}", "--http", f"127.0.0.1:{http_port}",
         "--http-token-file", token_file, "--log-format", "text"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    driver = None
    devices = []
    try:
        base = f"http://127.0.0.1:{http_port}"
        if not check("server answers /healthz", wait_http(base + "/healthz")):
            return

        # A finished file, for the download link.
        done = Device(tcp_port, "browser-dev-2")
        devices.append(done)
        finished = b"hello from the dashboard test\n" * 300
        codes = [done.init("f-done", FINISHED_NAME, len(finished)), done.segment("f-done", 0, finished),
                 done.fin("f-done", finished)]
        check("finished upload: init, segment, fin all 0x00", codes == [0, 0, 0], codes)

        # An upload that stays in progress: two held ranges with a hole, no fin.
        dev = Device(tcp_port, XSS_CLIENT)
        devices.append(dev)
        body = bytes((i * 7) % 251 for i in range(SIZE))
        codes = [dev.init("f-xss", XSS_NAME, SIZE),
                 dev.segment("f-xss", 0, body[:SEG]),
                 dev.segment("f-xss", 4 * SEG, body[4 * SEG:5 * SEG])]
        check("upload in progress: init and two segments 0x00", codes == [0, 0, 0], codes)

        profile = os.path.join(work, "profile")
        downloads = os.path.join(work, "downloads")
        os.makedirs(downloads)
        driver = start_browser(profile, downloads)
        wait = WebDriverWait(driver, 20)
        driver.get(base + "/")

        # Without the token: the form, and no data anywhere on the page.
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
        check("the page asks for the token", True)
        check("no data shown before the token", not driver.find_element(By.ID, "main").is_displayed()
              and "browser-dev" not in driver.page_source)

        # A wrong token is refused and asked again.
        driver.find_element(By.ID, "token").send_keys("wrong-token")
        driver.find_element(By.ID, "connect").click()
        try:
            wait.until(lambda d: "refused" in d.find_element(By.ID, "login-msg").text
                       and d.find_element(By.ID, "login").is_displayed())
            check("a wrong token is refused", True)
        except TimeoutException:
            check("a wrong token is refused", False, driver.find_element(By.ID, "login-msg").text)

        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "connect").click()
        row_css = "#transfers tbody tr"
        try:
            wait.until(lambda d: d.find_element(By.ID, "main").is_displayed()
                       and len(d.find_elements(By.CSS_SELECTOR, row_css)) >= 1)
            check("with the token the transfers appear", True)
        except TimeoutException:
            check("with the token the transfers appear", False, driver.find_element(By.ID, "status").text)
            return

        row = [r for r in driver.find_elements(By.CSS_SELECTOR, row_css) if r.get_attribute("data-file-id") == "f-xss"]
        if not check("the transfer in progress is listed", len(row) == 1):
            return
        row = row[0]
        name = row.find_element(By.CSS_SELECTOR, ".name")
        check("the device's file name is shown as text", name.text == XSS_NAME, name.text)
        check("the device's client id is shown as text",
              row.find_element(By.CSS_SELECTOR, ".client .id").text == XSS_CLIENT,
              row.find_element(By.CSS_SELECTOR, ".client .id").text)
        pct = row.find_element(By.CSS_SELECTOR, ".pct").text
        check("progress: 256 KiB of 1 MiB (25.0%)", "25.0%" in pct and "256" in pct, pct)
        bar = row.find_element(By.CSS_SELECTOR, ".bar")
        check("progress bar value", bar.get_attribute("aria-valuenow") == "25.0", bar.get_attribute("aria-valuenow"))
        fill_w = driver.execute_script("const r = arguments[0]; return r.querySelector('.fill').getBoundingClientRect().width / r.getBoundingClientRect().width;", bar)
        check("progress bar drawn at a quarter", 0.2 < fill_w < 0.3, fill_w)
        strip = row.find_element(By.CSS_SELECTOR, "canvas.strip")
        ranges = json.loads(strip.get_attribute("data-ranges"))
        check("held ranges drawn as a strip", ranges == [[0, SEG], [4 * SEG, 5 * SEG]], ranges)
        # Pixels: held at the start, a hole after it, held again at 4/8 of the width.
        px = driver.execute_script("""
            const c = arguments[0], g = c.getContext('2d');
            const at = (f) => Array.from(g.getImageData(Math.floor(c.width * f), Math.floor(c.height / 2), 1, 1).data);
            return [at(0.05), at(0.3), at(0.55)];""", strip)
        check("the strip shows held, hole, held", px[0] == px[2] and px[0] != px[1], px)
        check("the transfer's transport is shown", "TCP" in row.find_element(By.CSS_SELECTOR, ".badge").text.upper())

        injected = driver.execute_script(
            "return document.querySelectorAll('img, svg, script:not([src]), b').length")
        check("nothing injected from device strings (no img, svg, b, inline script)", injected == 0, injected)
        alert = no_alert(driver)
        check("no alert", alert is None, alert)

        # Clients by transport.
        tcp_group = driver.find_elements(By.CSS_SELECTOR, '#clients .group[data-transport="tcp"] tbody tr')
        ids = sorted(r.get_attribute("data-client-id") for r in tcp_group)
        check("clients listed under TCP", ids == sorted(["browser-dev-2", XSS_CLIENT]), ids)
        check("the client id in the clients table is text",
              any(r.find_element(By.CSS_SELECTOR, ".id").text == XSS_CLIENT for r in tcp_group))

        # Counters from /metrics.
        conn = driver.find_element(By.ID, "c-conn").text
        cmds = driver.find_element(By.ID, "c-cmds").text
        check("counters: 2 connections", conn == "2", conn)
        check("counters: file commands counted", cmds.replace(",", "").isdigit() and int(cmds.replace(",", "")) >= 6, cmds)
        check("counters: bytes in", "KiB" in driver.find_element(By.ID, "c-in").text or "MiB" in driver.find_element(By.ID, "c-in").text,
              driver.find_element(By.ID, "c-in").text)

        # Live: one more segment shows up within a refresh or two.
        check("another segment 0x00", dev.segment("f-xss", SEG, body[SEG:2 * SEG]) == 0)
        try:
            WebDriverWait(driver, 10).until(lambda d: any(
                "37.5%" in r.find_element(By.CSS_SELECTOR, ".pct").text
                for r in d.find_elements(By.CSS_SELECTOR, row_css) if r.get_attribute("data-file-id") == "f-xss"))
            check("the page refreshes by itself (37.5% within 10 s)", True)
        except TimeoutException:
            check("the page refreshes by itself (37.5% within 10 s)", False)

        # The finished file, and its download through the token.
        frows = [r for r in driver.find_elements(By.CSS_SELECTOR, "#files tbody tr") if r.get_attribute("data-file-id") == "f-done"]
        if check("the finished file is listed", len(frows) == 1):
            fname = frows[0].find_element(By.CSS_SELECTOR, ".name").text
            check("the finished file's name is text", fname == FINISHED_NAME, fname)
            link = frows[0].find_element(By.CSS_SELECTOR, "a.download")
            check("download link percent-encodes the ids",
                  link.get_attribute("href").endswith("/api/v1/files/browser-dev-2/f-done/content"), link.get_attribute("href"))
            link.click()
            deadline = time.time() + 20
            got = None
            while time.time() < deadline:
                done_files = [f for f in os.listdir(downloads) if not f.endswith(".crdownload")]
                if done_files:
                    with open(os.path.join(downloads, done_files[0]), "rb") as f:
                        got = f.read()
                    if got == finished:
                        break
                time.sleep(0.2)
            check("the download (with the bearer token) has the file's bytes", got == finished,
                  f"{len(got) if got else None} bytes in {os.listdir(downloads)}")

        csp = [e["message"] for e in driver.get_log("browser")
               if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]
        check("no Content-Security-Policy violation", not csp, csp)

        # Screenshot of the populated page (before the reload).
        driver.execute_script("window.scrollTo(0, 0)")
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        driver.save_screenshot(args.screenshot)
        check("screenshot written to " + args.screenshot,
              os.path.getsize(args.screenshot) > 10000, os.path.getsize(args.screenshot))

        # A reload in the same tab keeps the token (sessionStorage).
        driver.refresh()
        try:
            wait.until(lambda d: d.find_element(By.ID, "main").is_displayed()
                       and len(d.find_elements(By.CSS_SELECTOR, row_css)) >= 1)
            check("a reload keeps the token for this tab", not driver.find_element(By.ID, "login").is_displayed())
        except TimeoutException:
            check("a reload keeps the token for this tab", False)
        # Forgetting it hides the data again.
        driver.find_element(By.ID, "forget").click()
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
        check("forget token hides the data", not driver.find_element(By.ID, "main").is_displayed()
              and "browser-dev-2" not in driver.page_source)
        alert = no_alert(driver)
        check("still no alert", alert is None, alert)
    finally:
        if driver is not None:
            driver.quit()
        for d in devices:
            try:
                d.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        if not all(ok for _, ok in results) or not results:
            print("--- server log ---")
            with open(os.path.join(work, "server.log")) as f:
                print(f.read()[-4000:])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--screenshot", default="target/dashboard.png")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="quicft-browser-")
    try:
        run(args, work)
    except Exception:  # noqa: BLE001 - reported as a failure with its traceback
        traceback.print_exc()
        results.append(("no exception", False))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
