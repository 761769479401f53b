"`imgcls train` from the outside: bad input gets one line and a non-zero exit; the safe model it writes by default predicts in a fresh process."
import json, subprocess, sys
from pathlib import Path
import pytest
from imgcls.core import example_data, make_toy_images

IMGCLS = [sys.executable, '-c', 'from imgcls.cli import main; main()']

def imgcls(*args, cwd=None):
    return subprocess.run([*IMGCLS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)

def one_line_error(r, *words):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    for w in words: assert w in lines[0], lines[0]

def test_missing_path(tmp_path): one_line_error(imgcls('train', tmp_path/'nope'), 'no such folder')

def test_empty_folder(tmp_path): one_line_error(imgcls('train', tmp_path), 'no images', 'empty')

def test_one_class(tmp_path):
    make_toy_images(tmp_path, 6, classes=('circle',))
    one_line_error(imgcls('train', tmp_path), 'only one class')

def test_folder_of_non_images(tmp_path):
    for c in 'ab': (tmp_path/c).mkdir(); (tmp_path/c/'notes.txt').write_text('not an image')
    one_line_error(imgcls('train', tmp_path), 'no images', 'notes.txt')

def test_images_that_do_not_decode(tmp_path):
    "Files named .jpg that are not images are moved to quarantine, not deleted, and training says so."
    make_toy_images(tmp_path/'data', 8)
    bad = tmp_path/'data'/'circle'/'fake.jpg'; bad.write_text('<html>')
    r = imgcls('train', tmp_path/'data', '--arch', 'efficientnet_lite0', '--size', '64', '--out', tmp_path/'m.safetensors')
    assert r.returncode == 0, r.stderr
    assert not bad.exists() and (tmp_path/'data-quarantine'/'circle'/'fake.jpg').read_text() == '<html>'
    assert 'quarantine' in r.stdout

def test_file_instead_of_folder(tmp_path):
    f = tmp_path/'x.jpg'; f.write_bytes(b'x')
    one_line_error(imgcls('train', f), 'not a folder')

def test_unknown_arch(tmp_path):
    make_toy_images(tmp_path, 6)
    one_line_error(imgcls('train', tmp_path, '--arch', 'resnet_9000'), 'unknown arch')

def _train_and_reload(tmp_path, data, *extra):
    "Train with the defaults (in `tmp_path`), then predict in a fresh process from the safe model it wrote."
    r = imgcls('train', data, '--json', *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert {'valid_accuracy', 'seconds', 'classes', 'model_path'} <= set(res)
    assert Path(res['model_path']) == tmp_path/'model.safetensors'
    assert sorted(p.name for p in tmp_path.glob('model.*')) == ['model.json', 'model.onnx', 'model.safetensors']   # safe by default: no pickle
    assert 'validation accuracy' in r.stdout and 'pickle' not in r.stdout + r.stderr
    folder = Path(data)/'val' if (Path(data)/'val').is_dir() else Path(data)
    imgs = [f for c in res['classes'] for f in sorted((folder/c).iterdir())[:5]]
    p = imgcls('predict', res['model_path'], *imgs, '--json')
    assert p.returncode == 0, p.stderr[-2000:]
    labels = [q['top_k'][0][0] for q in json.loads(p.stdout.strip().splitlines()[-1])['predictions']]
    right = sum(l == f.parent.name for l, f in zip(labels, imgs))
    assert right >= 0.8 * len(imgs), list(zip(labels, imgs))   # five images of each class, nearly all recognised
    return res

def test_train_toy_and_reload(tmp_path):
    data = make_toy_images(tmp_path/'shapes', 15)
    res = _train_and_reload(tmp_path, data, '--arch', 'efficientnet_lite0', '--size', '64')
    assert res['classes'] == ['circle', 'square']
    assert res['valid_accuracy'] >= 0.8, res   # chance is 0.5; the shapes are easy

def test_out_pkl_is_asked_for_and_noted(tmp_path):
    "`--out x.pkl` writes fastai's export (a pickle) instead, and says so in one line."
    data = make_toy_images(tmp_path/'shapes', 8)
    r = imgcls('train', data, '--arch', 'efficientnet_lite0', '--size', '64', '--out', tmp_path/'m.pkl')
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/'m.pkl').exists() and not (tmp_path/'m.safetensors').exists()
    assert [l for l in r.stdout.splitlines() if 'is a pickle' in l] == [l for l in r.stdout.splitlines() if l.startswith('note: m.pkl is a pickle')] != []

@pytest.mark.skipif(example_data('hymenoptera_data') is None, reason='real photos (../shared/data/hymenoptera_data) not present')
def test_train_ants_bees_default_arch(tmp_path):
    res = _train_and_reload(tmp_path, example_data('hymenoptera_data'))
    assert res['classes'] == ['ants', 'bees']
    assert res['valid_accuracy'] >= 0.92, res

def test_json_keys_label_issues_and_domain_check(tmp_path):
    "The summary and JSON carry the cross-validated estimate and the label check; model.json the scores; --no-domain-check leaves the check out."
    data = make_toy_images(tmp_path/'shapes', 15)
    args = ('--arch', 'efficientnet_lite0', '--size', '64', '--json')
    r = imgcls('train', data, *args, '--out', tmp_path/'a'/'model.safetensors')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert {'valid_accuracy', 'cv_accuracy', 'cv_std', 'label_issues', 'label_issues_file'} <= set(res), sorted(res)
    assert 0.5 < res['cv_accuracy'] <= 1 and 0 <= res['cv_std'] < 0.5, res
    assert Path(res['label_issues_file']) == tmp_path/'a'/'label_issues.csv'
    rows = (tmp_path/'a'/'label_issues.csv').read_text().splitlines()
    assert rows[0] == 'rank,path,label,suggested,p_label,split' and len(rows) == 1 + res['label_issues']
    assert any(l.startswith('estimate: ') and 'within 2' in l for l in r.stdout.splitlines()), r.stdout
    assert f"{res['label_issues']} image(s) look mislabeled" in r.stdout
    meta = json.loads((tmp_path/'a'/'model.json').read_text())
    assert {k: meta[k] for k in ('valid_accuracy', 'cv_accuracy', 'cv_std')} == {k: round(res[k], 4) for k in ('valid_accuracy', 'cv_accuracy', 'cv_std')}
    assert meta['extras'] == ['ood.refs'] and meta['extra_config']['ood']['n_train'] == res['n_train']
    r2 = imgcls('train', data, *args, '--out', tmp_path/'b'/'model.safetensors', '--no-domain-check')
    assert r2.returncode == 0, r2.stderr[-3000:]
    meta2 = json.loads((tmp_path/'b'/'model.json').read_text())
    assert meta2['extras'] == [] and 'ood' not in meta2['extra_config']
    assert json.loads(r2.stdout.strip().splitlines()[-1])['domain_check'] is None
