"""End-to-end: `imgcls app MODEL` served by Voila, driven in Debian's Chromium with Playwright.

Needs /usr/bin/chromium (`make chromium`). Screenshots go to test-artifacts/ (git-ignored).
"""
import os, re, shutil, signal, socket, subprocess, sys, time, urllib.request, warnings
from pathlib import Path
import pytest
from imgcls.core import example_data, make_toy_images, image_files

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'test-artifacts'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    "A small lite0 model in the safe format: ants/bees (20 photos each) when the shared photos exist, else toy shapes."
    from imgcls.training import train
    tmp = tmp_path_factory.mktemp('app')
    ab = example_data('hymenoptera_data')
    if ab:
        data = tmp/'ab'
        for c in ('ants', 'bees'):
            (data/c).mkdir(parents=True)
            for f in image_files(ab/'train'/c)[:20]: shutil.copy(f, data/c/f.name)
        photo = image_files(ab/'val'/'bees')[0]
    else:
        data = make_toy_images(tmp/'toy', 12)
        photo = image_files(data/'circle')[0]
    res = train(data, 'efficientnet_lite0', size=None if ab else 64, out=tmp/'model', verbose=False)
    return Path(res['model_path']), photo, res['classes']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def imgcls_command() -> list:
    exe = Path(sys.executable).parent/'imgcls'
    return [str(exe)] if exe.exists() else [sys.executable, '-c', 'from imgcls.cli import main; main()']


@pytest.fixture
def app_url(model, tmp_path):
    "Start `imgcls app` on a free port; yield its URL; always stop it (and its kernels) afterwards."
    port, log = free_port(), tmp_path/'app.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen(imgcls_command() + ['app', str(model[0]), '--port', str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None: pytest.fail(f'imgcls app exited with {proc.returncode}:\n{log.read_text()}')
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() > deadline: pytest.fail(f'imgcls app did not answer within 120 s:\n{log.read_text()}')
            time.sleep(0.5)
        assert f'open {url}' in log.read_text()
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if proc.poll() is not None: break
            try: os.killpg(proc.pid, sig)
            except ProcessLookupError: break
            try: proc.wait(wait)
            except subprocess.TimeoutExpired: pass
        try: os.killpg(proc.pid, signal.SIGKILL)   # kernels left in the group, if any
        except ProcessLookupError: pass


def test_app_in_chromium(model, app_url):
    "Upload a photo and see label and probability; upload a text file and see a sentence; nothing fetched from elsewhere."
    if not Path(CHROMIUM).exists(): pytest.skip(f'{CHROMIUM} missing: run `make chromium`')
    from playwright.sync_api import sync_playwright, expect
    _, photo, classes = model
    ARTIFACTS.mkdir(exist_ok=True)
    local = ('http://127.0.0.1', 'ws://127.0.0.1', 'data:', 'blob:')
    fetched_elsewhere, blocked = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1000, 'height': 700})
            page.on('requestfinished', lambda r: None if r.url.startswith(local) else fetched_elsewhere.append(r.url))
            page.on('requestfailed', lambda r: None if r.url.startswith(local) else blocked.append(r.url))
            page.goto(app_url, timeout=60_000)
            upload = page.get_by_role('button', name=re.compile('Upload images'))
            expect(upload).to_be_visible(timeout=120_000)       # the kernel starts and loads the model first

            with page.expect_file_chooser() as chooser: upload.click()
            chooser.value.set_files(str(photo))
            card = page.locator('.imgcls-result')
            expect(card).to_be_visible(timeout=60_000)
            text = card.inner_text()
            assert photo.name in text
            assert re.search(rf"({'|'.join(map(re.escape, classes))})\s+\d+\.\d%", text), text
            page.screenshot(path=str(ARTIFACTS/'app-prediction.png'), full_page=True)

            with page.expect_file_chooser() as chooser: upload.click()
            chooser.value.set_files(files=[{'name': 'notes.txt', 'mimeType': 'text/plain', 'buffer': b'not a picture'}])
            error = page.locator('.imgcls-error')
            expect(error).to_contain_text('notes.txt is not an image', timeout=60_000)
            expect(page.locator('.imgcls-result')).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS/'app-not-an-image.png'), full_page=True)
            body = page.locator('body').inner_text()
            assert 'Traceback' not in body and 'Error' not in body
        finally: browser.close()
    assert fetched_elsewhere == [], f'the page fetched from outside 127.0.0.1: {fetched_elsewhere}'


def test_app_busy_port(model):
    "A port in use is one line of error, not a Voila traceback."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        r = subprocess.run(imgcls_command() + ['app', str(model[0]), '--port', str(s.getsockname()[1])],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert 'is in use' in r.stderr and len(r.stderr.strip().splitlines()) == 1
