"""`imgcls report` on a model in the safe format, from the outside; the HTML report in headless Chromium; pickles refused unopened.

The model is trained on a copy of the shared ants/bees set in which 5 training ants are filed under bees, with 8 validation
photos per class held out as a test folder, and a domain check ("none of these") fitted on its features and saved in the
model file (as `train` will); a copy is saved without one. Unrelated images: 40 flowers (scikit-image's sample photos
without the shared flowers). The tests skip, saying why, when `example_data('hymenoptera_data')` is None. The pickle tests
need no photos.
"""
import json, pickle, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pytest
from imgcls.core import ImgclsError, example_data, image_files, make_toy_images, quarantine_dir
from imgcls.interpret import Interpretation, model_learner
from imgcls.learner import _labels, compute_features
from imgcls.modelfile import save_safe
from imgcls.ood import fit_domain, unrelated_photos
from imgcls.report import report

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'test-artifacts'
ANTS = example_data('hymenoptera_data')
NO_ANTS = 'real photos absent: example_data("hymenoptera_data") is None (no shared/data/hymenoptera_data and no $IMGCLS_DATA)'
CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']


def imgcls(*args) -> subprocess.CompletedProcess:
    "Run the `imgcls` command in a fresh process."
    return subprocess.run([sys.executable, '-c', 'from imgcls.cli import main; main()', *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def last_json(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def imgcls_here(capsys, *args) -> tuple:
    "Run `imgcls` in this process (no second torch import): `(status, stdout, stderr)`."
    from imgcls.cli import run
    capsys.readouterr()
    rc = run(list(map(str, args)))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *words):
    "Status 1 and a single line on stderr that holds each of `words`, no traceback."
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and 'Traceback' not in err, err
    for w in words: assert w in lines[0], (w, lines[0])


def evil_pickle(folder: Path) -> tuple:
    "`(model.pkl, marker)`: a pickle that creates `marker` when it is unpickled."
    marker = folder/'pwned'
    class Payload:
        def __reduce__(self): return (Path.touch, (marker,))
    f = folder/'model.pkl'
    f.write_bytes(pickle.dumps(Payload()))
    return f, marker


def add_domain_check(model: Path, data: Path) -> Path:
    "Until `train` saves one: fit a domain check on the model's own features and save it in the model file."
    learn = model_learner(model, data)
    feats = lambda items: compute_features(learn, items)[0]
    check = fit_domain(feats(learn.dls.train_ds.items), feats(learn.dls.valid_ds.items), labels=_labels(learn.dls.train_ds))
    return save_safe(learn.model, model, *check.state())


def unrelated_folder(dest: Path) -> Path:
    "40 flower photos (scikit-image's sample photos without the shared data) copied into `dest`."
    flowers = example_data('flowers')
    try: photos = image_files(flowers)[::100][:40] if flowers else unrelated_photos()
    except ImgclsError as e: pytest.skip(f'no unrelated photos: no shared flowers and {e}')
    dest.mkdir()
    for f in photos: shutil.copy(f, dest/f.name)
    return dest


@pytest.fixture(scope='module')
def ants(tmp_path_factory):
    "A safe model (with a domain check) trained on a noisy copy of ants/bees, a held-out test folder (8 per class + an unknown class), unrelated photos, and the report's JSON with --ood."
    if ANTS is None: pytest.skip(NO_ANTS)
    from imgcls.training import train
    root = tmp_path_factory.mktemp('ants')
    data, test = Path(shutil.copytree(ANTS, root/'data')), root/'test'
    for c in ('ants', 'bees'):
        (test/c).mkdir(parents=True)
        for f in image_files(data/'val'/c)[-8:]: shutil.move(f, test/c/f.name)
    (test/'wasp').mkdir()
    for f in image_files(make_toy_images(root/'toy', 4, classes=('circle',))): shutil.copy(f, test/'wasp'/f.name)
    moved = [Path(shutil.move(f, data/'train'/'bees'/f.name)) for f in image_files(data/'train'/'ants')[:5]]   # filed under the wrong class
    res = train(data, 'efficientnet_lite2', top_epochs=0, out=root/'model.safetensors', verbose=False)
    model = Path(res['model_path'])
    plain = save_safe(model_learner(model, data).model, root/'plain.safetensors')   # the same model, without a domain check
    add_domain_check(model, data)
    ood = unrelated_folder(root/'unrelated')
    out = root/'report.html'
    r = last_json(imgcls('report', model, data, '--out', out, '--ood', ood, '--json'))
    return SimpleNamespace(root=root, data=data, test=test, model=model, plain=plain, ood=ood, moved=moved, res=res, json=r, html=out)


def test_report_cli_safe_model(ants):
    "`imgcls report model.safetensors DATA --json`: exit 0, the metrics as JSON on the last line, the HTML written."
    r = ants.json
    cm = np.array(r['confusion_matrix'])
    assert cm.sum() == r['n_images'] == ants.res['n_valid']             # every scored image is in the matrix once
    assert r['classes'] == ants.res['classes'] == ['ants', 'bees']
    assert r['accuracy'] == pytest.approx(ants.res['valid_accuracy'], abs=1e-3)   # the split training used
    assert r['accuracy'] > 0.85, r['accuracy']                           # well above chance (0.5) on ants/bees
    assert {'accuracy', 'balanced_accuracy', 'macro_f1', 'per_class', 'confusion_matrix', 'n_images', 'warnings'} <= set(r)
    assert sum(v['support'] for v in r['per_class'].values()) == r['n_images']
    assert Path(r['report']) == ants.html.resolve() and ants.html.stat().st_size > 10_000


def test_report_cli_test_folder(ants, capsys):
    rc, out, err = imgcls_here(capsys, 'report', ants.model, ants.data, '--test', ants.test, '--out', ants.root/'test.html', '--json')
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert np.array(r['confusion_matrix']).sum() == r['n_images'] == 16
    assert r['unknown']['wasp']['n'] == 4 and sum(r['unknown']['wasp']['predicted'].values()) == 4   # reported, not dropped
    assert [w for w in r['warnings'] if 'wasp: 4' in w] != [], r['warnings']
    assert [w for w in r['warnings'] if 'byte-identical' in w] == []      # held out: no copies of training images


def test_cli_user_errors(ants, tmp_path, capsys):
    "Missing model, missing data folder, a test folder of unknown classes only: one-line errors, status 1, nothing written."
    only_unknown = tmp_path/'only-wasp'
    shutil.copytree(ants.test/'wasp', only_unknown/'wasp')
    cases = [((tmp_path/'nope.safetensors', ants.data), 'no such model'),
             ((ants.model, tmp_path/'nowhere'), 'no such data folder'),
             ((ants.model, ants.data, '--test', only_unknown), 'none of the 4 images')]
    for args, msg in cases:
        rc, out, err = imgcls_here(capsys, 'report', *args, '--out', tmp_path/'r.html')
        one_line_error(rc, err, msg)
    assert not (tmp_path/'r.html').exists()


def test_report_in_chromium(ants):
    "The report renders offline in headless Chromium: confusion matrix and image grids visible, nothing fetched."
    sync_api = pytest.importorskip('playwright.sync_api')
    if not CHROMIUM.exists(): pytest.skip('Debian chromium not installed: run `make chromium`')
    ARTIFACTS.mkdir(exist_ok=True)
    outside = []
    def route(r):
        if r.request.url.startswith('file://'): r.continue_()
        else: outside.append(r.request.url); r.abort()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=dict(width=1200, height=900))
            page.route('**/*', route)
            page.goto(ants.html.resolve().as_uri(), wait_until='load')
            cm = page.locator('#confusion-plot')
            assert cm.is_visible() and cm.evaluate('e => e.complete && e.naturalWidth') > 300
            assert page.locator('table.confusion tr').count() == 3                       # header + 2 classes
            for kind in ('top losses', 'most confident wrong', 'most uncertain', 'most confident right'):
                assert page.get_by_role('heading', name=kind).is_visible(), kind
            thumbs = page.locator('#images figure img')
            assert thumbs.count() >= 24
            assert thumbs.evaluate_all('xs => xs.every(x => x.complete && x.naturalWidth > 0)')
            assert 'pred' in page.locator('#images figure figcaption').first.inner_text()
            page.screenshot(path=str(ARTIFACTS/'report.png'), full_page=True)
        finally: browser.close()
    assert outside == []
    assert (ARTIFACTS/'report.png').stat().st_size > 10_000


def test_imbalance_in_html(tmp_path):
    "A class with near-zero recall behind high accuracy is a warning on the page."
    targs = np.array([0] * 90 + [1] * 90 + [2] * 10)
    preds = np.concatenate([targs[:180], [2] + [0] * 9])
    interp = Interpretation(np.eye(3)[preds] * .8 + .1 * (1 - np.eye(3)[preds]), targs, ['cat', 'dog', 'fox'])
    page = interp.to_html(tmp_path/'skewed.html').read_text()
    assert page.count('id="warnings"') == 1 and page.count("class &#x27;fox&#x27;: recall 10%") == 1, page[:2000]


def test_pickle_refused_unopened_cli(tmp_path):
    "`imgcls report model.pkl DATA` does not unpickle: the marker is not created, one line names --trust-pickle."
    data = make_toy_images(tmp_path/'data', 6)
    pkl, marker = evil_pickle(tmp_path)
    r = imgcls('report', pkl, data, '--out', tmp_path/'r.html')
    one_line_error(r.returncode, r.stderr, 'pickle', '--trust-pickle')
    assert not marker.exists() and not (tmp_path/'r.html').exists()


def test_pickle_refused_unopened_api(tmp_path):
    data = make_toy_images(tmp_path/'data', 6)
    pkl, marker = evil_pickle(tmp_path)
    for call in (lambda: report(pkl, data, out=tmp_path/'r.html'), lambda: Interpretation.from_model(pkl, data)):
        with pytest.raises(ImgclsError) as e: call()
        assert e.value.kind == 'unsafe', (e.value.kind, str(e.value))
        assert 'allow_pickle=True' in str(e.value), str(e.value)
    assert not marker.exists()


def test_trusted_pickle_reports_without_warning_text(ants, tmp_path):
    "With --trust-pickle a fastai export is reported like the safe model, and no pickle warning reaches the user."
    from imgcls.training import train
    res = train(ants.data, 'efficientnet_lite2', top_epochs=0, out=tmp_path/'model.pkl', verbose=False)
    r = imgcls('report', res['model_path'], ants.data, '--out', tmp_path/'r.html', '--json', '--trust-pickle')
    assert last_json(r)['confusion_matrix'] == ants.json['confusion_matrix']
    assert 'pickle' not in r.stderr.lower() and 'Warning' not in r.stderr, r.stderr


def test_report_lists_the_mislabeled(ants):
    "The 5 ants filed under bees are (mostly) in `label_issues`, suggested back to ants, shown on the page; nothing moved."
    li = ants.json['label_issues']
    assert {'n_images', 'n_flagged', 'n_flagged_train', 'n_flagged_valid', 'suspects'} <= set(li), li.keys()
    assert li['n_images'] == ants.res['n_train'] + ants.res['n_valid']                  # train and validation
    moved = {str(f) for f in ants.moved}
    found = [s for s in li['suspects'] if s['path'] in moved]
    assert len(found) >= 4, f"{len(found)} of the 5 moved ants among the suspects: {li['suspects']}"
    assert {(s['label'], s['suggested']) for s in found} == {('bees', 'ants')}
    assert [s['rank'] for s in li['suspects']] == sorted(s['rank'] for s in li['suspects'])   # most suspicious first
    page = ants.html.read_text()
    assert page.count('<section id="mislabeled">') == 1
    assert all(Path(s['path']).name in page for s in found)
    assert all(f.exists() for f in ants.moved) and not quarantine_dir(ants.data).exists()    # the report moves nothing


def test_report_ood_cli(ants):
    "`imgcls report MODEL DATA --ood FOLDER --json`: the domain check's AUROC and share caught, in the JSON and the HTML."
    d = ants.json['domain']
    assert d['has_check'] is True and {'threshold', 'k', 'keep', 'n_refs', 'valid', 'ood'} <= set(d), d
    assert d['valid']['n'] == ants.res['n_valid'] and d['valid']['called_none'] <= 0.1, d['valid']
    o = d['ood']
    assert o['n'] == len(image_files(ants.ood)) and Path(o['folder']) == ants.ood.absolute()
    assert o['auroc'] >= 0.95, o
    assert o['caught'] >= 0.8, o                                     # the model's own threshold
    page = ants.html.read_text()
    assert [page.count(x) for x in ('<section id="domain">', 'id="domain-plot"', '<p id="ood">')] == [1, 1, 1]


def test_model_without_domain_check(ants, tmp_path, capsys):
    "Saved without a check: the page says so; --ood is a one-line error before anything is written."
    r = report(ants.plain, ants.data, out=tmp_path/'plain.html', labels=False)
    assert r['domain'] == {'has_check': False} and 'label_issues' not in r
    assert (tmp_path/'plain.html').read_text().count('This model has no domain check') == 1
    rc, out, err = imgcls_here(capsys, 'report', ants.plain, ants.data, '--ood', ants.ood, '--out', tmp_path/'r.html')
    one_line_error(rc, err, 'no domain check')
    assert not (tmp_path/'r.html').exists()
