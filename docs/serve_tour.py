"""A tour of `yollava serve`'s page in headless Chromium, against a running server (pocket, as README "Serve" reports).

Makes <billy> from 4 MyVLM photos of billy_dog (../shared/data), records every stage the card's bar shows with the
time and load average, checks a grid of photos (2 of billy, another dog, a piggy bank) on "Who is here?" and on the
card, chats (a text question, a photo question, "Who is in this photo?"), exports, and takes the README's
screenshots. Every wait has a limit. Needs Debian's chromium and chromium-driver, and selenium::

    yollava users add alice --home /tmp/tour            # prints the key
    yollava serve --home /tmp/tour --port 8765 --threads 1 &
    YOLLAVA_KEY=yk-... OUT=/tmp/tour-out python docs/serve_tour.py   # steps: create recognise chat whochat phone export

Log (JSON, one event a line, with seconds and load average) in OUT/log.json; screenshots in OUT.
"""
import json, os, sys, time, zipfile
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from yollava.paths import default_data_root

URL = os.environ.get("URL", "http://127.0.0.1:8765")
KEY = os.environ["YOLLAVA_KEY"]
OUT = Path(os.environ.get("OUT", "serve-tour"))
OUT.mkdir(parents=True, exist_ok=True)
DATA = default_data_root() / "myvlm"
NAME = os.environ.get("NAME", "billy")
SUBJ = "billy_dog"
TRAIN = [str(DATA / SUBJ / f"{SUBJ}_{i}.jpg") for i in (1, 2, 3, 4)]
CHECK = [str(DATA / SUBJ / f"{SUBJ}_{i}.jpg") for i in (8, 9)] + [str(DATA / "maeve_dog/maeve_dog_1.jpg"), str(DATA / "red_piggy_bank/red_piggy_bank_1.jpg")]
CHAT_PHOTO = str(DATA / SUBJ / f"{SUBJ}_10.jpg")
STEPS = sys.argv[1:] or ["create", "recognise", "chat", "whochat", "phone", "export"]
log = []
T0 = time.monotonic()


def load():
    return open("/proc/loadavg").read().split()[0]


def note(what, **kw):
    e = {"t": round(time.monotonic() - T0, 1), "load": load(), "what": what, **kw}
    log.append(e)
    print(json.dumps(e), flush=True)
    (OUT / "log.json").write_text(json.dumps(log, indent=1))


def api(method, path, **kw):
    return httpx.request(method, URL + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=60, **kw)


opts = Options()
opts.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--window-size=1366,900", "--hide-scrollbars", f"--user-data-dir={OUT / 'chrome'}"):
    opts.add_argument(flag)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
d.set_page_load_timeout(60)
d.set_script_timeout(30)
d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False})
d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source":
    "window.__csp = []; window.__errors = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    "window.addEventListener('error', e => window.__errors.push(String(e.message)));"})
dl = OUT / "downloads"; dl.mkdir(exist_ok=True)
d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(dl)})
W = lambda s: WebDriverWait(d, s, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,))
by_id = lambda i: d.find_element(By.ID, i)


def shot(name, at=None):
    if at:
        d.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'start'}); window.scrollBy(0, -12)", at)
        time.sleep(0.5)
    d.save_screenshot(str(OUT / f"{name}.png"))
    note("screenshot", name=name)


def job_box():
    return d.execute_script(
        "const b = document.querySelector(`#gallery .card[data-name='${arguments[0]}'] .job`);"
        "return b && {fraction: parseFloat(b.dataset.fraction), stage: b.dataset.stage, state: b.dataset.state, text: b.querySelector('.job-line').innerText,"
        " stages: Array.from(b.querySelectorAll('.stages li')).map(x => x.dataset.stage + ':' + x.dataset.status + ':' + x.textContent)};", NAME)


try:
    d.get(URL + "/")
    time.sleep(2)
    if by_id("api-key").is_displayed():
        by_id("api-key").send_keys(KEY)
        by_id("connect").click()
    W(60).until(lambda _: "Signed in as alice" in by_id("status").text)
    note("signed in", status=by_id("status").text)

    if "create" in STEPS:
        by_id("concept-name").send_keys(NAME)
        W(20).until(lambda _: "is free" in by_id("name-hint").text)
        by_id("concept-photos").send_keys("\n".join(TRAIN))
        W(10).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#previews li img")) == len(TRAIN))
        note("previews", hint=by_id("photo-hint").text)
        by_id("create-concept").click()
        t_up = time.monotonic()
        W(120).until(lambda _: job_box() is not None)
        note("card with bar", upload_s=round(time.monotonic() - t_up, 1), box=job_box())
        seen, last_frac, shot_train, back = [], 0.0, False, 0
        deadline = time.monotonic() + 3600  # a fast-recipe concept took 37 min on pocket at load 6-7
        while time.monotonic() < deadline:
            st = d.execute_script("const c = document.querySelector(`#gallery .card[data-name='${arguments[0]}']`); return c && c.dataset.status;", NAME)
            if st == "ready":
                break
            b = job_box()
            if b:
                if b["fraction"] + 1e-6 < last_frac:
                    back += 1
                last_frac = max(last_frac, b["fraction"])
                key = (b["stage"], b["state"])
                if not seen or seen[-1][0] != key:
                    seen.append((key, time.monotonic()))
                    j = api("GET", "/v1/jobs?status=active").json()["data"]
                    note("stage", stage=b["stage"], state=b["state"], fraction=b["fraction"], text=b["text"],
                         api_stages=[(s["key"], s["status"], s.get("done"), s.get("total"), s.get("seconds")) for s in (j[0]["progress"]["stages"] if j else [])])
                if b["stage"] == "train" and not shot_train and "left" in b["text"] and " 0/" not in b["text"]:
                    shot("serve-training", "header"); shot_train = True
                    note("train box", box=b)
            time.sleep(0.5)
        jobs = api("GET", "/v1/jobs").json()["data"]
        job = [j for j in jobs if j["concept"] == NAME][0]
        note("job done", status=job["status"], elapsed=job.get("elapsed_seconds"), fraction_went_back=back,
             stages=[(s["key"], s["status"], s.get("done"), s.get("total"), s.get("seconds")) for s in job["progress"]["stages"]])
        W(30).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}'] .thumbs img")) == len(TRAIN))
        W(30).until(lambda _: d.execute_script("return Array.from(document.querySelectorAll(`#gallery .card[data-name='${arguments[0]}'] .thumbs img`)).every(i => i.complete && i.naturalWidth > 0)", NAME))
        c = d.find_element(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}']")
        note("card ready", text=c.text, thumbs=d.execute_script("return Array.from(arguments[0].querySelectorAll('.thumbs img')).map(i => [i.naturalWidth, i.naturalHeight, i.src.length])", c))
        shot("card-ready", "#concepts-section")

    if "recognise" in STEPS:
        t = time.monotonic()
        by_id("who-photos").send_keys("\n".join(CHECK))
        W(600).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#recognition .run:first-child .result[data-state=done], #recognition .run:first-child .result[data-state=error]")) == len(CHECK))
        dt = time.monotonic() - t
        rows = d.execute_script(
            "return Array.from(document.querySelectorAll('#recognition .run:first-child .result')).map(f => ({file: f.dataset.file, state: f.dataset.state,"
            " verdict: f.querySelector('.verdict').innerText, scores: Array.from(f.querySelectorAll('.score')).map(s => ({c: s.dataset.concept, p: s.dataset.pYes,"
            " present: s.dataset.present, level: s.querySelector('.level').style.width, thr: s.querySelector('.threshold') && s.querySelector('.threshold').style.left,"
            " text: s.innerText}))}))")
        note("who is here", seconds=round(dt, 1), rows=rows)
        shot("serve-recognition", "#who-section")
        # on the card
        t = time.monotonic()
        drop_input = d.find_element(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}'] .card-drop input")
        drop_input.send_keys("\n".join(CHECK[:1] + CHECK[2:3]))
        W(600).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#recognition .run:first-child .result[data-state=done], #recognition .run:first-child .result[data-state=error]")) == 2
                     and d.find_element(By.CSS_SELECTOR, "#recognition .run:first-child").get_attribute("data-concept") == NAME)
        rows = d.execute_script("return Array.from(document.querySelectorAll('#recognition .run:first-child .result')).map(f => [f.dataset.file, f.innerText])")
        note("card check", seconds=round(time.monotonic() - t, 1), rows=rows)

    if "chat" in STEPS:
        def ask(text, n, photo=None):
            if photo:
                by_id("chat-photo").send_keys(photo)
                W(10).until(lambda _: by_id("attachment").is_displayed())
            by_id("chat-input").send_keys(text)
            t = time.monotonic()
            by_id("chat-send").click()
            W(900).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble.assistant[data-state=done]")) == n or by_id("chat-error").text)
            a = d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble.assistant")[-1].text
            tags = [t.text for t in d.find_elements(By.CSS_SELECTOR, "#chat-log .tags .tag")]
            note("chat", q=text, photo=bool(photo), seconds=round(time.monotonic() - t, 1), answer=a, error=by_id("chat-error").text, tags=tags,
                 attachment_cleared=not by_id("attachment").is_displayed(),
                 scroll_gap=d.execute_script("const l = document.getElementById('chat-log'); return l.scrollHeight - l.scrollTop - l.clientHeight"))
        by_id("chat-clear").click()
        d.find_element(By.CSS_SELECTOR, "#chips .chip").click()
        ask(" What kind of animal is this?", 1)
        ask(f"Is <{NAME}> in this photo?", 2, CHAT_PHOTO)
        ask("Who is in this photo?", 3, CHECK[3])
        shot("serve-chat", "header")

    if "whochat" in STEPS:
        by_id("chat-clear").click()
        for i, (q, ph) in enumerate((("Who is in this photo?", CHAT_PHOTO), ("Who is in this photo?", CHECK[3])), 1):
            by_id("chat-photo").send_keys(ph)
            W(10).until(lambda _: by_id("attachment").is_displayed())
            by_id("chat-input").send_keys(q)
            t = time.monotonic()
            by_id("chat-send").click()
            W(900).until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble.assistant[data-state=done]")) == i or by_id("chat-error").text)
            note("who chat", photo=ph.rsplit("/", 1)[1], seconds=round(time.monotonic() - t, 1), answer=d.find_elements(By.CSS_SELECTOR, "#chat-log .bubble.assistant")[-1].text,
                 tags=[(t.text, t.get_attribute("title")) for t in d.find_elements(By.CSS_SELECTOR, "#chat-log .tags .tag")], error=by_id("chat-error").text)
        shot("serve-chat-who", "header")
    if "phone" in STEPS:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        d.get(URL + "/")
        W(60).until(lambda _: d.find_elements(By.CSS_SELECTOR, "#gallery .card .thumbs img"))
        time.sleep(2)
        note("phone", scroll=d.execute_script("return [document.documentElement.clientWidth, document.documentElement.scrollWidth]"))
        shot("serve-phone", "#concepts-section")
    if "export" in STEPS:
        t = time.monotonic()
        d.find_element(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}'] button.export").click()
        W(60).until(lambda _: "Downloaded" in d.find_element(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}'] .export-status").text)
        W(30).until(lambda _: (dl / f"{NAME}.zip").is_file() and zipfile.is_zipfile(dl / f"{NAME}.zip"))
        note("export", seconds=round(time.monotonic() - t, 1), status=d.find_element(By.CSS_SELECTOR, f"#gallery .card[data-name='{NAME}'] .export-status").text,
             files=zipfile.ZipFile(dl / f"{NAME}.zip").namelist(), size=(dl / f"{NAME}.zip").stat().st_size)
    note("page errors", csp=d.execute_script("return window.__csp"), js=d.execute_script("return window.__errors"))
finally:
    try:
        d.save_screenshot(str(OUT / "last.png"))
    except Exception:
        pass
    d.quit()
