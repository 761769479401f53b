"""End-to-end: `imgcls app MODEL` served by Voila, driven in Debian's Chromium with Playwright.

Needs /usr/bin/chromium (`make chromium`). Screenshots go to test-artifacts/ (git-ignored).
One server serves the tests in order, with short culling settings so the file stays quick:
`--max-kernels 3 --preheat 1 --orphan-seconds 10 --idle-minutes 1`.
"""
import base64, json, re, shutil, socket, subprocess, sys, threading, time, urllib.error, urllib.request
from pathlib import Path
import psutil, pytest
from imgcls.core import example_data, make_toy_images, image_files
from procs import stop_process_group

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'test-artifacts'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']
LOCAL = ('http://127.0.0.1', 'ws://127.0.0.1', 'data:', 'blob:')
CAP, ORPHAN_S = 3, 10


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A small lite0 model in the safe format, with `examples/` beside it: ants/bees (20 photos each) when the shared photos exist, else toy shapes."
    from imgcls.training import train
    tmp = tmp_path_factory.mktemp('app')
    ab = example_data('hymenoptera_data')
    if ab:
        data = tmp/'ab'
        for c in ('ants', 'bees'):
            (data/c).mkdir(parents=True)
            for f in image_files(ab/'train'/c)[:20]: shutil.copy(f, data/c/f.name)
        photo, examples = image_files(ab/'val'/'bees')[0], [image_files(ab/'val'/c)[1] for c in ('ants', 'bees')]
    else:
        data = make_toy_images(tmp/'toy', 12)
        photo, examples = image_files(data/'circle')[0], [image_files(data/c)[1] for c in ('circle', 'square')]
    res = train(data, 'efficientnet_lite0', size=None if ab else 64, top_epochs=0, out=tmp/'model', verbose=False)
    path = Path(res['model_path'])
    assert 'ood' in (json.loads((path/'model.json').read_text()).get('extra_config') or {}), 'train saved no domain check'
    (path/'examples').mkdir()
    for f in examples: shutil.copy(f, path/'examples'/f.name)
    return path, photo, res['classes']


def unrelated_photo(tmp: Path) -> Path:
    "scikit-image's cat, as a JPEG: unlike any ants, bees or toy shapes."
    import skimage
    from PIL import Image
    Image.fromarray(skimage.data.chelsea()).save(tmp/'chelsea.jpg', quality=90)
    return tmp/'chelsea.jpg'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def imgcls_command() -> list:
    exe = Path(sys.executable).parent/'imgcls'
    return [str(exe)] if exe.exists() else [sys.executable, '-c', 'from imgcls.cli import main; main()']


def kernels(proc) -> list:
    "The server's kernel processes."
    out = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if 'ipykernel' in ' '.join(p.cmdline()): out.append(p)
        except psutil.Error: pass   # exited meanwhile (a zombie until reaped)
    return out


def total_rss(proc) -> int:
    "Bytes of memory held by the server and all its kernels."
    p = psutil.Process(proc.pid)
    n = p.memory_info().rss
    for c in p.children(recursive=True):
        try: n += c.memory_info().rss
        except psutil.Error: pass
    return n


def wait_for(cond, timeout: float, step: float = 1.):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v: return v
        time.sleep(step)
    return cond()


def get(url: str, timeout: float = 120) -> tuple:
    "A plain HTTP GET (no websocket): (status, body)."
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()


@pytest.fixture(scope='module')
def server(model, tmp_path_factory):
    "Start `imgcls app` on a free port with short culling settings; yield (url, process, log); always stop it and its kernels."
    port, log = free_port(), tmp_path_factory.mktemp('log')/'app.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(imgcls_command() + ['app', str(model[0]), '--port', str(port), '--max-kernels', str(CAP), '--preheat', '1',
                                                    '--orphan-seconds', str(ORPHAN_S), '--idle-minutes', '1'],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        def up():
            if proc.poll() is not None: pytest.fail(f'imgcls app exited with {proc.returncode}:\n{log.read_text()}')
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1): return True
            except OSError: return False
        if not wait_for(up, 120, 0.5): pytest.fail(f'imgcls app did not listen within 120 s:\n{log.read_text()}')
        assert f'open {url}' in log.read_text()
        # the preheated kernel has loaded the model: it shows in the log
        if not wait_for(lambda: 'is filled with 1 kernel' in log.read_text(), 120): pytest.fail(f'no preheated kernel:\n{log.read_text()}')
        yield url, proc, log
    finally:
        stop_process_group(proc)   # kernels included


@pytest.fixture(scope='module')
def browser():
    if not Path(CHROMIUM).exists(): pytest.skip(f'{CHROMIUM} missing: run `make chromium`')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try: yield b
        finally: b.close()


def open_app(browser, url, width=1200, timeout=120_000):
    "A page showing the app's controls, and the lists of outside requests and console errors it made."
    from playwright.sync_api import expect
    page = browser.new_page(viewport={'width': width, 'height': 900})
    outside, console = [], []
    page.on('request', lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
    page.on('console', lambda m: console.append(m.text) if m.type == 'error' else None)
    page.goto(url, timeout=timeout)
    expect(page.locator('.imgcls-pickbtn')).to_be_visible(timeout=timeout)
    return page, outside, console


def pick(page, *files):
    "Choose files with the page's file input: paths or (name, bytes)."
    page.locator('.imgcls-pick').set_input_files(
        [str(f) if isinstance(f, Path) else {'name': f[0], 'mimeType': 'application/octet-stream', 'buffer': f[1]} for f in files])


def not_clipped(page, selector: str) -> list:
    "Texts of elements matching `selector` that are cut off (wider than their box, or beyond the window's right edge)."
    return page.eval_on_selector_all(selector, '''els => els.filter(e => e.scrollWidth > e.clientWidth + 1 ||
        e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).map(e => e.textContent)''')


def overlapping(page, text_selector: str, other_selector: str) -> list:
    "Texts of `text_selector` elements whose text (not just their box) is covered by a visible `other_selector` element."
    return page.evaluate("""([a, b]) => { const others = [...document.querySelectorAll(b)].map(e => e.getBoundingClientRect()).filter(r => r.width && r.height);
        return [...document.querySelectorAll(a)].filter(e => { const r = document.createRange(); r.selectNodeContents(e);
            return [...r.getClientRects()].some(t => others.some(o => t.left < o.right - 1 && o.left < t.right - 1 && t.top < o.bottom - 1 && o.top < t.bottom - 1)); })
          .map(e => e.textContent); }""", [text_selector, other_selector])


def test_page(model, server, browser):
    "Pick, drop, click an example; bad files get sentences; results stay until Clear; readable at 1200 and 390 px; nothing from elsewhere."
    from playwright.sync_api import expect
    url, proc, log = server
    _, photo, classes = model
    ARTIFACTS.mkdir(exist_ok=True)
    page, outside, console = open_app(browser, url)
    try:
        h1 = page.locator('h1').inner_text()
        assert all(c in h1 for c in classes), h1
        pick(page, photo)
        cards = page.locator('.imgcls-result')
        expect(cards).to_have_count(1, timeout=60_000)
        text = cards.first.inner_text()
        assert photo.name in text
        assert re.search(rf"({'|'.join(map(re.escape, classes))})\s+\d+\.\d%", text), text
        assert len(re.findall(r'\d+\.\d%', text)) == 1 + len(classes)         # the label's and every class's bar
        pick(page, ('notes.txt', b'not a picture'), ('empty.png', b''))
        errors = page.locator('.imgcls-error')
        expect(errors).to_have_count(2, timeout=60_000)
        assert 'empty.png is empty' in errors.all_inner_texts()[0 if 'empty' in errors.all_inner_texts()[0] else 1]
        # drop a file on the app, as a browser does
        page.evaluate('''b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer(); dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
            document.querySelector('.imgcls-drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }''',
                      base64.b64encode(photo.read_bytes()).decode())
        expect(cards).to_have_count(2, timeout=60_000)
        assert 'dropped.jpg' in cards.first.inner_text()
        page.locator('[data-example]').first.click()
        expect(cards).to_have_count(3, timeout=60_000)
        assert page.locator('.imgcls-pickbtn').inner_text() == 'Choose photos'
        page.screenshot(path=str(ARTIFACTS/'app-1200.png'), full_page=True)
        assert page.locator('.imgcls-status').inner_text() == '3 classified; 2 could not be'
        assert not_clipped(page, 'h1, .imgcls-label, .imgcls-v, .imgcls-name, .imgcls-error p, .imgcls-status') == []
        assert overlapping(page, '.imgcls-status', '.imgcls-bar button') == []
        lefts = page.eval_on_selector_all('.imgcls-result .imgcls-bars', 'els => els.map(e => Math.round(e.getBoundingClientRect().left))')
        assert len(set(lefts)) <= 3, lefts       # one x per column of cards: the bars never follow the thumbnail's width
        assert page.locator('.imgcls-app').bounding_box()['width'] > 900     # uses the width

        page.set_viewport_size({'width': 390, 'height': 844})
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS/'app-390.png'), full_page=True)
        assert not_clipped(page, 'h1, .imgcls-label, .imgcls-v, .imgcls-name, .imgcls-error p, .imgcls-pickbtn, .imgcls-status') == []
        assert overlapping(page, '.imgcls-status', '.imgcls-bar button') == []
        assert page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1')
        assert len(set(page.eval_on_selector_all('.imgcls-result .imgcls-bars', 'els => els.map(e => Math.round(e.getBoundingClientRect().left))'))) == 1

        page.get_by_role('button', name='Clear results').click()
        expect(page.locator('.imgcls-result, .imgcls-error')).to_have_count(0, timeout=30_000)
        body = page.locator('body').inner_text()
        assert 'Traceback' not in body
    finally: page.close()
    assert outside == [], f'the page asked for addresses outside 127.0.0.1: {outside}'
    assert not [m for m in console if 'Content Security Policy' in m or 'Content-Security-Policy' in m], console


def test_cap(model, server, browser):
    "With the cap at 3, a 4th simultaneous visitor sees the busy page, and the first 3 still get answers."
    from playwright.sync_api import expect
    url, proc, log = server
    _, photo, _ = model
    # the first N visitors: earlier tests' pages are closed, their kernels must be gone (within ORPHAN_S) before these arrive
    assert wait_for(lambda: len(kernels(proc)) <= 1, 60), 'the kernels of pages closed by earlier tests were not freed'
    pages = []
    try:
        for _ in range(CAP): pages.append(open_app(browser, url)[0])
        status, body = get(url)
        assert status == 503 and 'Busy, try again in a minute' in body, (status, body[:300])
        for p in pages: pick(p, photo)
        for p in pages: expect(p.locator('.imgcls-result')).to_have_count(1, timeout=60_000)
    finally:
        for p in pages: p.close()


def test_memory_after_visits(model, server, browser):
    "12 visits one after another, each page closed: within a minute the server's memory is back within 200 MB of its idle figure."
    url, proc, log = server
    assert wait_for(lambda: len(kernels(proc)) <= 1, 60), 'the kernels of the pages closed by test_cap were not freed'
    time.sleep(2)
    idle = total_rss(proc)
    peak = 0
    for _ in range(12):
        page = open_app(browser, url)[0]
        peak = max(peak, len(kernels(proc)))
        page.close()
    back = wait_for(lambda: total_rss(proc) - idle < 200e6 and len(kernels(proc)) <= 1, 60)
    assert back, f'{(total_rss(proc) - idle)/1e6:.0f} MB above idle a minute after 12 visits; {len(kernels(proc))} kernels'
    assert peak >= 2     # the visits did start kernels


def test_unconnected_loads_freed(server):
    "8 page loads that never open their websocket (plain GETs): their kernels are freed well within 2 minutes."
    url, proc, log = server
    assert wait_for(lambda: len(kernels(proc)) <= 1, 60)
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(url))) for _ in range(8)]
    for t in threads: t.start(); time.sleep(0.2)
    for t in threads: t.join()
    codes = sorted(r[0] for r in results)
    assert codes.count(200) == CAP and codes.count(503) == 8 - CAP, codes
    page = next(body for code, body in results if code == 200)
    assert page.index('Loading the model') < page.index('imgcls-app'), 'no loading message before the app'
    assert 'fontawesome' not in page.lower() and 'cdn.' not in page
    assert len(kernels(proc)) >= CAP       # the loads did start kernels
    t0 = time.time()
    assert wait_for(lambda: len(kernels(proc)) <= 2, 120), f'{len(kernels(proc))} kernels after 2 minutes'
    print(f'kernels of 8 unconnected loads freed in {time.time() - t0:.0f} s')


def test_app_busy_port(model):
    "A port in use is one line of error, not a Voila traceback."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        r = subprocess.run(imgcls_command() + ['app', str(model[0]), '--port', str(s.getsockname()[1])],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert 'is in use' in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unrelated_photo(model, server, browser, tmp_path):
    "A photo of none of the classes (a cat for an ants/bees model) gets the 'none of these' sentence, the closest class still shown."
    from playwright.sync_api import expect
    url, proc, log = server
    _, _, classes = model
    page = open_app(browser, url)[0]
    try:
        pick(page, unrelated_photo(tmp_path))
        card = page.locator('.imgcls-result')
        expect(card).to_have_count(1, timeout=60_000)
        text = card.first.inner_text()
        assert f"This doesn't look like any of: {', '.join(classes)}." in text, text
        assert re.search(rf"Closest: ({'|'.join(map(re.escape, classes))}) \d+\.\d%", text), text
        page.screenshot(path=str(ARTIFACTS/'app-unrelated.png'), full_page=True)
    finally: page.close()


def test_kernel_is_torch_free(server):
    "With model.onnx beside the model, neither the server nor its kernels import torch: each kernel is a fraction of a torch one."
    url, proc, log = server
    assert 'predicting with torch' not in log.read_text()
    ks = kernels(proc)
    assert ks, 'no kernel (the preheated one should be there)'
    for k in ks + [psutil.Process(proc.pid)]:
        maps = open(f'/proc/{k.pid}/maps').read()
        assert 'libtorch' not in maps, f'process {k.pid} ({" ".join(k.cmdline()[:3])}) loaded torch'
    print('kernel RSS:', [f'{k.memory_info().rss/1e6:.0f} MB' for k in ks])
