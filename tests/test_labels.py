"Issue 15: `imgcls mislabeled` finds flipped labels on toy shapes, prints the ranked JSON summary, and moves nothing."
import json, shutil
import numpy as np, pytest
from imgcls.core import make_toy_images, image_files
from imgcls.labels import confident_learning, find_label_issues, cli_mislabeled

def test_confident_learning_rule():
    P = np.array([[.9, .1, 0], [.8, .1, .1], [.1, .8, .1], [.2, .7, .1], [.1, .1, .8], [.1, .2, .7], [.7, .2, .1], [.3, .3, .4]])
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    flagged, suggested = confident_learning(P, y)
    # thresholds: class 0 (.9+.8+.3)/3=.667, class 1 .75, class 2 (.8+.7+.1)/3=.533
    assert flagged.tolist() == [False, False, False, False, False, False, True, False]
    assert suggested[6] == 0
    # image 7 (labelled 0): no class reaches its threshold, so no flag; the suggestion falls back to the argmax
    assert suggested[7] == 2

@pytest.fixture(scope='module')
def noisy(tmp_path_factory):
    data = make_toy_images(tmp_path_factory.mktemp('toys')/'shapes', 30, classes=('circle', 'square'), seed=3)
    moved = []
    for f in image_files(data/'circle')[:3]:
        shutil.move(f, data/'square'/f.name); moved.append(str(data/'square'/f.name))
    return data, set(moved)

def test_find_label_issues_finds_flips(noisy):
    data, moved = noisy
    df = find_label_issues(data)
    assert len(df) == 60
    found = set(df.path[df.flagged])
    assert moved <= set(df.path[:6]), df.head(8)
    # toy shapes are perfectly separable, so the rule's thresholds sit near 1 and it flags only the surest; never a clean image
    assert found and found <= moved, df.head(8)
    assert set(df.suggested[df.path.isin(found & moved)]) == {'circle'}

def test_cli_json_is_exactly_the_flagged(noisy, capsys):
    data, moved = noisy
    before = sorted(map(str, image_files(data)))
    cli_mislabeled(data, json=True)
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert summary['n_images'] == 60
    df = find_label_issues(data)
    assert [s['path'] for s in summary['suspects']] == df.path[df.flagged].tolist()
    assert all(set(s) == {'path', 'label', 'suggested', 'p_label'} for s in summary['suspects'])
    assert [s['p_label'] for s in summary['suspects']] == sorted(s['p_label'] for s in summary['suspects'])
    assert sorted(map(str, image_files(data))) == before  # nothing moved

def test_learner_input_gives_the_same_rows(noisy):
    from imgcls.data import image_dataloaders
    from imgcls.learner import image_learner
    data, _ = noisy
    dls = image_dataloaders(data, check=False, num_workers=0)
    a, b = find_label_issues(dls), find_label_issues(image_learner(dls))
    assert a.path.tolist() == b.path.tolist() and a.p_label.tolist() == b.p_label.tolist()

def test_train_lists_the_flips_beside_the_model(noisy, tmp_path):
    "`train` runs the label check on its own features: the flipped images are in label_issues.csv, and nothing moved."
    from imgcls.training import train
    import pandas as pd
    data, moved = noisy
    before = sorted(map(str, image_files(data)))
    res = train(data, 'efficientnet_lite0', size=64, out=tmp_path/'m'/'model.safetensors', verbose=False, domain_check=False)
    listed = pd.read_csv(tmp_path/'m'/'label_issues.csv')
    assert res['label_issues'] == len(listed) and res['label_issues_file'] == str(tmp_path/'m'/'label_issues.csv')
    assert set(listed.path) & moved and set(listed.path) <= moved, listed
    assert sorted(map(str, image_files(data))) == before

def test_mislabeled_is_a_command(noisy, capsys):
    from imgcls.cli import run
    data, moved = noisy
    assert run(['mislabeled', str(data), '--json']) == 0
    assert {s['path'] for s in json.loads(capsys.readouterr().out.splitlines()[-1])['suspects']} <= moved
