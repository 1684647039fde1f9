"""Drives the sting-proxy dashboard in headless Chromium and checks what it renders.

Usage: dashboard_check.py SPEC.json

SPEC (written by tests/api_dashboard.rs) holds:
  base          proxy base URL, e.g. http://127.0.0.1:PORT
  dashboard     dashboard path, e.g. /analytics/
  cookie        {"name": ..., "value": ...}: an admin's app session cookie
  expected      numbers and rows read from the API by the test, to compare with the page:
                today/yesterday {sessions, views, users}, pages [[name, count, sessions]],
                bots, durations {ended}, recent_users [...], xss_path, xss_user,
                tables {browsers, os, device-types, countries, cities: [[name, count]]},
                user {id, sessions}, peak_total, ts_total_hour,
                online {users, bold_user, revoke_sid}: who is online and the session the
                online table's revoke button must end,
                behavior {user, routes [[name, count]], requests, sessions [sid]}: the
                behaviour page of a user clicked in the recent list,
                range {key, current, previous {sessions, views, users}, pages, referrers
                [[name, sessions, users]], funnel [[sessions, users]], cohorts [[cohort,
                users]]}: what every panel must show once the range picker chose `key`
  screenshot    where to save a PNG of the page
  chromium, chromedriver   binaries

Prints one JSON line with what it measured; exits 1 listing every mismatch.
"""

import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

spec = json.load(open(sys.argv[1]))
base, expected = spec["base"], spec["expected"]
problems = []
measured = {}


def check(what, got, want):
    if got != want:
        problems.append(f"{what}: page shows {got!r}, API says {want!r}")


def wait_for(what, predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the element may not exist yet
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}\n" + "\n".join(problems))


options = webdriver.ChromeOptions()
options.binary_location = spec["chromium"]
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2400"]:
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path=spec["chromedriver"]), options=options)
try:
    # Set the admin's cookie before any navigation (no page of the app is visited, nothing is
    # recorded, and the first thing the browser loads is the dashboard).
    host = base.split("//", 1)[1].split(":", 1)[0]
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCookie", {"name": spec["cookie"]["name"], "value": spec["cookie"]["value"], "domain": host, "path": "/"})

    driver.get(base + spec["dashboard"])
    wait_for("the dashboard to load its data", lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")
    measured["first_render_ms"] = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-render-ms"))
    # Reported, not asserted: speed is measured by benchmarks, never by timed test assertions.
    measured["bytes_transferred"] = driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => !e.name.includes('/stream/'))"
        ".reduce((a, e) => a + e.decodedBodySize, 0) + performance.getEntriesByType('navigation')[0].decodedBodySize"
    )
    text = lambda css: driver.find_element(By.CSS_SELECTOR, css).text

    for day in ["today", "yesterday"]:
        for field in ["sessions", "views", "users"]:
            check(f"{day} {field}", text(f"#{day}-{field}"), str(expected[day][field]))

    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#top-pages tbody tr")]
    check("top pages", rows, [[str(c) for c in r] for r in expected["pages"]])
    check("bots", text("#bots"), str(expected["bots"]))
    for table, want in expected["tables"].items():
        got = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]
        check(f"{table} table", got, [[str(c) for c in r] for r in want] or [["no data"]])
    check("sessions ended", text("#dur-ended"), str(expected["durations"]["ended"]))
    check("hourly total", text("#ts-total"), str(expected["ts_total_hour"]))
    heat = sum(int(td.text or 0) for td in driver.find_elements(By.CSS_SELECTOR, "#heatmap td"))
    check("heatmap total", heat, expected["peak_total"])

    users = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#recent .user-link")]
    check("recent users", users, expected["recent_users"])

    # Who is online: newest activity first, user strings (markup included) as text.
    online_users = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#online .user-link")]
    check("online users", online_users, expected["online"]["users"])
    if expected["online"]["bold_user"] not in online_users:
        problems.append(f"the user id with markup is not shown as text in the online table: {online_users}")
    if driver.find_elements(By.CSS_SELECTOR, "#online b, #online img, #online script"):
        problems.append("markup from a user string became an element in the online table")

    # Strings from requests render as text: the script tag and the img are shown, never run.
    page_names = [r[0] for r in rows]
    if expected["xss_path"] not in page_names:
        problems.append(f"the XSS page view is not shown as text: {page_names}")
    if expected["xss_user"] not in users:
        problems.append(f"the XSS user id is not shown as text: {users}")
    if driver.find_elements(By.CSS_SELECTOR, "main img, main script"):
        problems.append("an injected element exists in the page")
    try:
        driver.switch_to.alert
        problems.append("an alert was opened: injected script ran")
    except NoAlertPresentException:
        pass

    # The security view: the day's anomalies, with user strings as text.
    anomalies = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#anomalies tbody tr")]
    check("anomalies (detector, user)", [[r[2], r[3]] for r in anomalies], expected["anomalies"])

    # The range picker drives every panel: the chosen range's numbers, the previous range's for
    # comparison, the acquisition, funnel and retention panels, as the API answers for it.
    rng = expected["range"]
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element(By.ID, "range")).select_by_value(rng["key"])
    wait_for("the panels to show the chosen range", lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-range") == rng["key"])
    for col, field in [("today", "current"), ("yesterday", "previous")]:
        for f in ["sessions", "views", "users"]:
            check(f"{field} range {f}", text(f"#{col}-{f}"), str(rng[field][f]))
    table_rows = lambda tid: [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, f"#{tid} tbody tr")]
    page_rows = table_rows("top-pages")
    check("top pages of the range", page_rows, [[str(c) for c in r] for r in rng["pages"]])
    check("acquisition referrers", table_rows("acq-referrers"), [[str(c) for c in r] for r in rng["referrers"]] or [["no data"]])
    check("funnel (sessions, users)", [r[1:3] for r in table_rows("funnel-steps")], [[str(c) for c in r] for r in rng["funnel"]])
    cohorts = [[tr.find_element(By.TAG_NAME, "th").text, tr.find_elements(By.TAG_NAME, "td")[0].text] for tr in driver.find_elements(By.CSS_SELECTOR, "#retention tbody tr")]
    check("retention cohorts (cohort, users)", cohorts, [[c, str(u)] for c, u in rng["cohorts"]])
    # The CSV link of the top-pages table gives the rows the table shows (its JSON).
    csv_url = driver.find_element(By.ID, "top-pages-csv").get_attribute("href")
    csv_text = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])))",
        csv_url,
    )
    check("CSV status and type", csv_text[:2], [200, "text/csv; charset=utf-8"])
    lines = csv_text[2].split("\r\n")
    check("CSV header", lines[0], "count,name,unique_sessions")
    csv_rows = [line.split(",") for line in lines[1:] if line]
    check("CSV rows = the table's rows", [[name, count, sessions] for count, name, sessions in csv_rows], page_rows)
    measured["range_checked"] = rng["key"]

    # Clicking a user shows their history; clicking a session shows its actions.
    user = expected["user"]
    next(b for b in driver.find_elements(By.CSS_SELECTOR, "#recent .user-link") if b.text == user["id"]).click()
    wait_for("the user's history", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#detail-sessions tbody .session-link")) == user["sessions"])
    check("detail title", text("#detail-title").startswith("Sessions of user " + user["id"]), True)
    # ... and their behaviour page: routes, requests and sessions across devices.
    bh = expected["behavior"]
    wait_for("the behaviour page", lambda: driver.find_element(By.ID, "panel-behavior").get_attribute("data-loaded") == bh["user"])
    got_routes = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#bh-routes tbody tr")]
    check("behaviour routes", got_routes, [[str(c) for c in r] for r in bh["routes"]])
    check("behaviour requests", text("#bh-requests"), str(bh["requests"]))
    check("behaviour title", text("#behavior-title"), "Behaviour of user " + bh["user"])
    check("sessions across devices", [b.get_attribute("title") for b in driver.find_elements(By.CSS_SELECTOR, "#bh-sessions .session-link")], bh["sessions"])
    check("behaviour hours total", sum(int(td.text or 0) for td in driver.find_elements(By.CSS_SELECTOR, "#bh-hours td")), bh["requests"])
    if driver.find_elements(By.CSS_SELECTOR, "#panel-behavior script, #panel-behavior img"):
        problems.append("an injected element exists in the behaviour page")
    driver.find_element(By.CSS_SELECTOR, "#detail-sessions tbody .session-link").click()
    actions = wait_for("the session's actions", lambda: [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#detail-actions li")])
    if not any("page_view" in a for a in actions):
        problems.append(f"no page_view in the session timeline: {actions}")

    # The live counter moves when a session starts (pushed over SSE, not refetched).
    wait_for("the live stream", lambda: text("#live-status") == "live")
    before = int(wait_for("a live reading", lambda: text("#active-now").isdigit() and text("#active-now")))
    req = urllib.request.Request(base + "/login", data=json.dumps({"user_id": "live-new-user", "role": "user"}).encode(),
                                 headers={"Content-Type": "application/json"})
    resp = urllib.request.urlopen(req)
    resp.read()
    # A browser then loads the next page with its new cookie; a session becomes active at its
    # second request (one-request sessions are light records, not active sessions).
    cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    urllib.request.urlopen(urllib.request.Request(base + "/", headers={"Cookie": cookie})).read()
    started = time.time()
    wait_for("the live counter to move", lambda: text("#active-now") == str(before + 1), timeout=15)
    measured["sse_update_s"] = round(time.time() - started, 2)
    # The counter is the stream's (the 30 s refresh of the other panels does not touch it once
    # the stream has delivered).
    measured["sse_events"] = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-sse-events") or 0)
    if measured["sse_events"] < 2:
        problems.append(f"the live counter did not come from the event stream: {measured['sse_events']} events")
    measured["sparkline_points"] = driver.execute_script("return document.querySelectorAll('#active-spark canvas').length")

    # Revoke an active session from the recent list: two clicks (the second confirms).
    button = driver.find_element(By.CSS_SELECTOR, '#recent button.revoke[data-sid="%s"]' % expected["revoke_sid"])
    button.click()
    check("revoke asks to confirm", button.text, "confirm revoke")
    button.click()
    wait_for("the revocation", lambda: button.text == "revoked")

    # Revoke from the online table: two clicks, then the session leaves the list.
    sel = '#online button.revoke[data-sid="%s"]' % expected["online"]["revoke_sid"]
    button = driver.find_element(By.CSS_SELECTOR, sel)
    button.click()
    check("online revoke asks to confirm", button.text, "confirm revoke")
    button.click()
    wait_for("the revoked session to leave the online table", lambda: not driver.find_elements(By.CSS_SELECTOR, sel))

    driver.save_screenshot(spec["screenshot"])

    # Phone width: every panel fits the screen (wide tables scroll inside their panel).
    driver.set_window_size(390, 844)
    time.sleep(0.5)
    too_wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...document.querySelectorAll('header, main, .card, footer')]"
        ".filter(e => e.getBoundingClientRect().right > w + 1).map(e => e.tagName + '#' + e.id)"
    )
    if too_wide:
        problems.append(f"at 390 px wide these do not fit the screen: {too_wide}")
    measured["phone_card_width"] = driver.execute_script("return Math.round(document.querySelector('.card').getBoundingClientRect().width)")

    # Dark theme follows the browser's preference.
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    dark = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    if light == dark:
        problems.append(f"prefers-color-scheme: dark changes nothing ({light})")
    measured["themes"] = [light, dark]

    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    if errors:
        problems.append(f"console errors: {errors}")
finally:
    driver.quit()

print(json.dumps(measured))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
