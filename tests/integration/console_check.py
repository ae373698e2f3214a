"""Drives the web console of `hardy serve` in headless Chromium (Debian's chromium and
chromium-driver, through selenium) and writes what the page showed as JSON.

Usage: console_check.py BASE_URL MODEL TOKEN IMAGE CORRUPTION SEVERITY EPS OUT_JSON

Started by tests/integration/console.rs, which compares what the page showed with the API's
own answers. This script only acts like a user and reads the page: it picks the image,
waits for the three cards (original, corrupted, adversarial), enters the token, submits an
evaluation job, waits for it to succeed and for its report (with its plots) to show. Each
step is recorded, passed or not, so that a failing step does not hide the others; the
browser's console log (CSP violations, failed loads) is recorded too. It exits 0 whenever it
could drive the browser at all; the Rust test decides what passed.
"""

import json
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, MODEL, TOKEN, IMAGE, CORRUPTION, SEVERITY, EPS, OUT = sys.argv[1:9]

report = {"steps": {}, "browser_log": []}


def step(name):
    """Runs one step, recording its result or its error."""

    def wrap(fn):
        t0 = time.monotonic()
        try:
            report["steps"][name] = {"ok": True, "value": fn()}
        except Exception as e:  # noqa: BLE001 - every failure is reported to the Rust test
            report["steps"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        report["steps"][name]["seconds"] = round(time.monotonic() - t0, 2)
        return fn

    return wrap


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1280,1600",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def wait(driver, seconds, condition, what):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        raise TimeoutError(f"{what} not within {seconds} s") from None


def read_card(driver, name):
    """Waits for a card to finish and reads its predictions, error and image."""
    card = driver.find_element(By.ID, f"card-{name}")
    wait(driver, 60, lambda d: card.get_attribute("data-state") in ("done", "error"), f"the {name} card")
    return driver.execute_script(
        """
        const card = arguments[0];
        const img = card.querySelector('img');
        return {
          state: card.dataset.state,
          error: card.querySelector('.error').hidden ? null : card.querySelector('.error').textContent,
          caption: card.querySelector('.caption').textContent,
          image_src: img.hidden ? null : img.getAttribute('src'),
          image_width: img.hidden ? 0 : img.naturalWidth,
          predictions: [...card.querySelectorAll('ol.predictions li')].map((li) => ({
            index: Number(li.dataset.index),
            label: li.dataset.label,
            score: Number(li.dataset.score),
            shown: li.querySelector('.label').textContent + ' ' + li.querySelector('.score').textContent,
          })),
        };
        """,
        card,
    )


def main():
    driver = start_browser()
    try:
        run(driver)
    finally:
        try:
            report["browser_log"] = driver.get_log("browser")
        except Exception as e:  # noqa: BLE001
            report["browser_log"] = [{"level": "SEVERE", "message": f"cannot read the browser log: {e}"}]
        driver.quit()


def run(driver):
    @step("open")
    def _():
        driver.get(BASE + "/")
        wait(driver, 30, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "page ready")
        rows = driver.find_elements(By.CSS_SELECTOR, "#models tr[data-model]")
        return {
            "title": driver.title,
            "models": [r.get_attribute("data-model") for r in rows],
            "model_rows": [r.text for r in rows],
            "server": driver.find_element(By.ID, "server").text,
            "corruptions": len(driver.find_elements(By.CSS_SELECTOR, "#corruption option")),
        }

    @step("try_image")
    def _():
        Select(driver.find_element(By.ID, "try-model")).select_by_value(MODEL)
        Select(driver.find_element(By.ID, "corruption")).select_by_value(CORRUPTION)
        Select(driver.find_element(By.ID, "severity")).select_by_value(SEVERITY)
        eps = driver.find_element(By.ID, "eps")
        eps.clear()
        eps.send_keys(EPS)
        # The file input is what the drop zone and the picker both feed.
        driver.find_element(By.ID, "file").send_keys(IMAGE)
        return {"picked": IMAGE}

    def card(name):
        if not report["steps"]["try_image"]["ok"]:
            raise RuntimeError("no image was picked (step try_image failed)")
        return read_card(driver, name)

    for name in ["original", "corrupted", "adversarial"]:
        step(f"card_{name}")(lambda name=name: card(name))

    job = {}

    @step("token")
    def _():
        field = driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        # The list loads once the token works: "no jobs yet" (or jobs), no error.
        wait(
            driver,
            15,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")
            or "no jobs yet" in d.find_element(By.ID, "jobs").text
            or d.find_element(By.ID, "jobs-error").is_displayed(),
            "the jobs list",
        )
        error = driver.find_element(By.ID, "jobs-error")
        if error.is_displayed():
            raise RuntimeError(f"the page shows an error: {error.text}")
        return {"stored": driver.execute_script("return sessionStorage.getItem('hardy.token')")}

    def fill_job_form(severities):
        Select(driver.find_element(By.ID, "job-model")).select_by_value(MODEL)
        for box in driver.find_elements(By.CSS_SELECTOR, "#job-form input[name=suite]"):
            if box.is_selected() != (box.get_attribute("value") in ("clean", "c")):
                box.click()
        for field, value in [
            ("job-data", "fashion-mnist:test"),
            ("job-limit", "20"),
            ("job-corruptions", "gaussian_noise"),
            ("job-severities", severities),
        ]:
            f = driver.find_element(By.ID, field)
            f.clear()
            f.send_keys(value)

    @step("api_error")
    def _():
        # An impossible spec: the page shows the API's JSON error, and no job is listed.
        fill_job_form("9")
        driver.find_element(By.ID, "submit-job").click()
        error = driver.find_element(By.ID, "jobs-error")
        wait(driver, 15, lambda d: error.is_displayed(), "the API's error in the page")
        return {"error": error.text, "jobs": len(driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]"))}

    @step("submit_job")
    def _():
        fill_job_form("1")
        listed = {r.get_attribute("data-job") for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")}
        driver.find_element(By.ID, "submit-job").click()

        def new_rows(d):
            rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]") if r.get_attribute("data-job") not in listed]
            error = d.find_element(By.ID, "jobs-error")
            return rows or (error.is_displayed() and error)

        row = wait(driver, 15, new_rows, "the new job in the list")
        if not isinstance(row, list):
            raise RuntimeError(f"the page shows an error: {row.text}")
        job["id"] = row[0].get_attribute("data-job")
        return {"id": job["id"], "first_state": row[0].get_attribute("data-state")}

    @step("job_finished")
    def _():
        seen = []

        def finished(d):
            rows = d.find_elements(By.CSS_SELECTOR, f"#jobs tr[data-job='{job['id']}']")
            if not rows:
                return False
            state = rows[0].get_attribute("data-state")
            progress = rows[0].find_element(By.CSS_SELECTOR, "td.progress").text
            if not seen or seen[-1] != [state, progress]:
                seen.append([state, progress])
            return state in ("succeeded", "failed", "cancelled")

        wait(driver, 120, finished, f"job {job.get('id')} finishing")
        row = driver.find_element(By.CSS_SELECTOR, f"#jobs tr[data-job='{job['id']}']")
        return {"state": row.get_attribute("data-state"), "row": row.text, "seen": seen}

    @step("report")
    def _():
        section = driver.find_element(By.ID, "report")
        wait(
            driver,
            30,
            lambda d: section.get_attribute("data-job") == job.get("id")
            and section.get_attribute("data-state") in ("done", "error"),
            "the report",
        )
        return driver.execute_script(
            """
            const s = document.getElementById('report');
            const imgs = [...s.querySelectorAll('#report-body img')];
            return {
              state: s.dataset.state,
              error: s.querySelector('.error').hidden ? null : s.querySelector('.error').textContent,
              title: document.getElementById('report-title').textContent,
              text: document.getElementById('report-body').innerText.slice(0, 4000),
              tables: s.querySelectorAll('#report-body table').length,
              images: imgs.map((i) => ({src: i.getAttribute('src'), width: i.naturalWidth, loaded: i.dataset.loaded === 'true'})),
              scripts: s.querySelectorAll('script').length,
            };
            """
        )


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the browser could not be driven at all
        report["fatal"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    with open(OUT, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v.get("ok") for k, v in report["steps"].items()}))
    sys.exit(1 if "fatal" in report else 0)
