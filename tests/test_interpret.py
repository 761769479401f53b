"""Interpretation on real photos, the `imgcls report` command, the HTML report in headless Chromium, and cleaning undo.

The real-photo tests train `efficientnet_lite0` on a subset of the shared flowers set (40 photos per class, the first
by file name, so the notebook's feature cache is reused) and hold out the next 10 per class as a test folder.
They skip, saying why, when `example_data('flowers')` is None.
"""
import json, shutil, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pytest
from sklearn.metrics import balanced_accuracy_score, classification_report, f1_score
from imgcls.core import example_data, image_files, make_toy_images, quarantine_dir
from imgcls.interpret import DELETE, Interpretation, apply_changes, read_log, report, undo

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT/'test-artifacts'
FLOWERS = example_data('flowers')
NO_FLOWERS = 'real photos absent: example_data("flowers") is None (no ../shared/data/flowers and no $IMGCLS_DATA)'
CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']


def imgcls(*args) -> subprocess.CompletedProcess:
    "Run the `imgcls` command in a fresh process."
    return subprocess.run([sys.executable, '-c', 'from imgcls.cli import main; main()', *map(str, args)],
                          capture_output=True, text=True, timeout=300)


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


@pytest.fixture(scope='module')
def flowers(tmp_path_factory):
    "A 5-class flowers subset (40 per class), a held-out test folder (10 per class + an unknown class), and a model trained on the subset."
    if FLOWERS is None: pytest.skip(NO_FLOWERS)
    from imgcls.training import train
    root = tmp_path_factory.mktemp('flowers')
    data, test = root/'data', root/'test'
    for c in sorted(p.name for p in FLOWERS.iterdir() if p.is_dir()):
        files = image_files(FLOWERS/c)
        for dest, fs in ((data/c, files[:40]), (test/c, files[40:50])):
            dest.mkdir(parents=True)
            for f in fs: shutil.copy(f, dest/f.name)
    lilies = make_toy_images(root/'lilies', 4, classes=('circle',))
    (test/'lily').mkdir()
    for f in image_files(lilies): shutil.copy(f, test/'lily'/f.name)
    res = train(data, 'efficientnet_lite0', epochs=30, lr=1e-2, out=root/'model.pkl', verbose=False)
    return SimpleNamespace(root=root, data=data, test=test, model=Path(res['model_path']), res=res)


@pytest.fixture(scope='module')
def validation_report(flowers):
    "`imgcls report MODEL DATA --out ... --json`: (its JSON, the HTML file)."
    out = flowers.root/'report.html'
    return last_json(imgcls('report', flowers.model, flowers.data, '--out', out, '--json')), out


def test_report_cli_validation(flowers, validation_report):
    r, out = validation_report
    cm = np.array(r['confusion_matrix'])
    assert cm.sum() == r['n_images'] == flowers.res['n_valid'] == 40   # every scored image is in the matrix once
    assert cm.shape == (5, 5) and r['classes'] == flowers.res['classes']
    assert abs(r['accuracy'] - flowers.res['valid_accuracy']) < 1e-3  # the same validation split as training
    assert {'accuracy', 'balanced_accuracy', 'macro_f1', 'per_class', 'confusion_matrix', 'n_images', 'warnings'} <= set(r)
    assert sum(v['support'] for v in r['per_class'].values()) == 40
    assert Path(r['report']) == out.resolve() and out.exists()


def test_per_class_equals_sklearn(flowers):
    from fastai.learner import load_learner
    interp = Interpretation.from_model(flowers.model, flowers.data)
    t, p, names = interp.targs.numpy(), interp.preds.numpy(), interp.vocab
    sk = classification_report(t, p, labels=list(range(len(names))), target_names=names, output_dict=True, zero_division=0)
    pc = interp.per_class()
    for c in names:
        for ours, theirs in (('precision', 'precision'), ('recall', 'recall'), ('f1', 'f1-score'), ('support', 'support')):
            assert pc.loc[c, ours] == pytest.approx(sk[c][theirs], abs=1e-12), (c, ours)
    m = interp.metrics()
    assert m['accuracy'] == pytest.approx(sk['accuracy'])
    assert m['macro_f1'] == pytest.approx(f1_score(t, p, average='macro'))
    assert m['balanced_accuracy'] == pytest.approx(balanced_accuracy_score(t, p))
    d = interp.to_dict()                                            # what --json prints, rounded to 4 places
    for c in names: assert d['per_class'][c]['f1'] == pytest.approx(sk[c]['f1-score'], abs=5e-5)
    # the cached-feature scores are the full model's: fastai's get_preds on the same files agrees
    learn = load_learner(flowers.model)
    with learn.no_bar(): full, _ = learn.get_preds(dl=learn.dls.test_dl(list(interp.items)))
    np.testing.assert_allclose(full.numpy(), interp.probs.numpy(), atol=1e-3)


def test_report_cli_test_folder(flowers, capsys):
    rc, out, err = imgcls_here(capsys, 'report', flowers.model, flowers.data, '--test', flowers.test, '--out', flowers.root/'test.html', '--json')
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert np.array(r['confusion_matrix']).sum() == r['n_images'] == 50
    assert r['unknown']['lily']['n'] == 4 and sum(r['unknown']['lily']['predicted'].values()) == 4   # reported, not dropped
    assert any('lily: 4' in w for w in r['warnings'])
    assert not any('byte-identical' in w for w in r['warnings'])   # held out: no copies of training images


def test_imbalance_flagged(tmp_path):
    "High accuracy, one class with near-zero recall: flagged in the JSON numbers and in the HTML report."
    targs = np.array([0] * 90 + [1] * 90 + [2] * 10)
    preds = np.concatenate([targs[:180], [2] + [0] * 9])
    interp = Interpretation(np.eye(3)[preds] * .8 + .1 * (1 - np.eye(3)[preds]), targs, ['cat', 'dog', 'fox'])
    d = json.loads(json.dumps(interp.to_dict()))
    assert d['accuracy'] > 0.95 and d['balanced_accuracy'] == pytest.approx(0.7) and d['low_recall_classes'] == ['fox']
    assert any('flatters' in w for w in d['warnings']) and any("class 'fox': recall 10%" in w for w in d['warnings'])
    page = interp.to_html(tmp_path/'skewed.html').read_text()
    assert 'id="warnings"' in page and "class &#x27;fox&#x27;: recall 10%" in page


def test_report_in_chromium(validation_report):
    "The report renders offline in headless Chromium: confusion matrix and image grids visible, nothing fetched."
    sync_api = pytest.importorskip('playwright.sync_api')
    if not CHROMIUM.exists(): pytest.skip('Debian chromium not installed: run `make chromium`')
    _, out = validation_report
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
            page.goto(out.resolve().as_uri(), wait_until='load')
            cm = page.locator('#confusion-plot')
            assert cm.is_visible() and cm.evaluate('e => e.complete && e.naturalWidth') > 300
            assert page.locator('table.confusion tr').count() == 6                       # header + 5 classes
            for kind in ('top losses', 'most confident wrong', 'most uncertain', 'most confident right'):
                assert page.get_by_role('heading', name=kind).is_visible()
            thumbs = page.locator('#images figure img')
            assert thumbs.count() >= 24
            assert thumbs.evaluate_all('xs => xs.every(x => x.complete && x.naturalWidth > 0)')
            assert 'pred' in page.locator('#images figure figcaption').first.inner_text()
            page.screenshot(path=str(ARTIFACTS/'report.png'), full_page=True)
        finally: browser.close()
    assert outside == []
    assert (ARTIFACTS/'report.png').stat().st_size > 10_000


def test_cli_user_errors(flowers, tmp_path, capsys):
    "Missing model file, missing data folder, and a test folder of unknown classes only: one-line errors, status 1."
    only_unknown = flowers.test.parent/'only-lily'
    shutil.copytree(flowers.test/'lily', only_unknown/'lily')
    cases = [((tmp_path/'nope.pkl', flowers.data), 'no such model file'),
             ((flowers.model, tmp_path/'nowhere'), 'no such data folder'),
             ((flowers.model, flowers.data, '--test', only_unknown), 'none of the 4 images')]
    for args, msg in cases:
        rc, out, err = imgcls_here(capsys, 'report', *args, '--out', tmp_path/'r.html')
        assert rc == 1, err
        assert err.strip().splitlines() == [err.strip().splitlines()[-1]] and msg in err, err   # one line, no traceback
    assert not (tmp_path/'r.html').exists()


def test_clean_undo_restores_bytes(tmp_path):
    "Relabel and delete in a train/valid layout, then undo everything: every file back, byte for byte."
    data = tmp_path/'pets'
    for split in ('train', 'valid'): make_toy_images(data/split, 5, classes=('circle', 'square'), seed=0 if split == 'train' else 1)
    snapshot = lambda: {f.relative_to(data): f.read_bytes() for f in image_files(data)}
    before = snapshot()
    tr, va = image_files(data/'train'/'circle'), image_files(data/'valid'/'square')
    done = apply_changes(data, {tr[0]: 'square', tr[1]: DELETE, va[0]: 'circle', va[1]: 'triangle', va[2]: DELETE})
    assert [e['action'] for e in done] == ['relabel', 'delete', 'relabel', 'relabel', 'delete']
    assert (data/'train'/'square'/tr[0].name).read_bytes() == before[tr[0].relative_to(data)]   # same split, new class
    assert (data/'valid'/'triangle'/va[1].name).exists()
    assert len(image_files(quarantine_dir(data))) == 2                                          # quarantined, not deleted
    assert snapshot() != before
    undone = undo(data, n=len(done))
    assert [e['of'] for e in undone] == [5, 4, 3, 2, 1]
    assert snapshot() == before
    assert not (data/'valid'/'triangle').exists() and image_files(quarantine_dir(data)) == []
    assert [e['action'] for e in read_log(data)] == ['relabel', 'delete', 'relabel', 'relabel', 'delete'] + ['undo'] * 5
