"""`Interpretation` on real photos from a model in the safe format: the numbers are scikit-learn's, the scores the full model's.

The model is trained on a copy of the shared ants/bees set (its features are in the shared cache, so training takes seconds);
the tests skip, saying why, when `example_data('hymenoptera_data')` is None.
"""
import shutil
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pytest
from sklearn.metrics import balanced_accuracy_score, classification_report, f1_score
from imgcls.core import ImgclsError, example_data
from imgcls.interpret import Interpretation, model_learner

ANTS = example_data('hymenoptera_data')
NO_ANTS = 'real photos absent: example_data("hymenoptera_data") is None (no shared/data/hymenoptera_data and no $IMGCLS_DATA)'


def train_safe(root: Path, data: Path, **kwargs) -> SimpleNamespace:
    "Train on `data` into `root/model.safetensors` (features from the shared cache); `(data, model, res)`."
    from imgcls.training import train
    res = train(data, 'efficientnet_lite2', top_epochs=0, out=root/'model.safetensors', verbose=False, **kwargs)
    return SimpleNamespace(root=root, data=data, model=Path(res['model_path']), res=res)


@pytest.fixture(scope='module')
def ants(tmp_path_factory):
    "A safe model trained on a copy of ants/bees."
    if ANTS is None: pytest.skip(NO_ANTS)
    root = tmp_path_factory.mktemp('ants')
    return train_safe(root, Path(shutil.copytree(ANTS, root/'data')))


def test_per_class_equals_sklearn(ants):
    interp = Interpretation.from_model(ants.model, ants.data)
    t, p, names = interp.targs.numpy(), interp.preds.numpy(), interp.vocab
    assert (len(interp), names) == (ants.res['n_valid'], ants.res['classes'])
    sk = classification_report(t, p, labels=list(range(len(names))), target_names=names, output_dict=True, zero_division=0)
    pc = interp.per_class()
    for c in names:
        for ours, theirs in (('precision', 'precision'), ('recall', 'recall'), ('f1', 'f1-score'), ('support', 'support')):
            assert pc.loc[c, ours] == pytest.approx(sk[c][theirs], abs=1e-12), (c, ours)
    m = interp.metrics()
    assert m['accuracy'] == pytest.approx(sk['accuracy'])
    assert m['accuracy'] == pytest.approx(ants.res['valid_accuracy'], abs=1e-4)   # the split training used
    assert m['macro_f1'] == pytest.approx(f1_score(t, p, average='macro'))
    assert m['balanced_accuracy'] == pytest.approx(balanced_accuracy_score(t, p))


def test_cached_scores_are_the_full_models(ants):
    "The cached-feature scores of a safe model equal fastai's `get_preds` through the whole network."
    learn = model_learner(ants.model, ants.data)
    interp = Interpretation.from_learner(learn)
    items = list(interp.items[:16])
    with learn.no_bar(): full, _ = learn.get_preds(dl=learn.dls.test_dl(items))
    np.testing.assert_allclose(full.numpy(), interp.probs[:16].numpy(), atol=1e-3)


def test_missing_inputs_say_what(ants, tmp_path):
    with pytest.raises(ImgclsError) as e: Interpretation.from_model(ants.model, tmp_path/'nowhere')
    assert (e.value.kind, 'no such data folder' in str(e.value)) == ('missing', True), str(e.value)
    with pytest.raises(ImgclsError) as e: Interpretation.from_model(tmp_path/'nope.safetensors', ants.data)
    assert 'no such model' in str(e.value), str(e.value)


def test_imbalance_flagged():
    "High accuracy, one class with near-zero recall: flagged in the JSON-ready numbers."
    targs = np.array([0] * 90 + [1] * 90 + [2] * 10)
    preds = np.concatenate([targs[:180], [2] + [0] * 9])
    interp = Interpretation(np.eye(3)[preds] * .8 + .1 * (1 - np.eye(3)[preds]), targs, ['cat', 'dog', 'fox'])
    m = interp.metrics()
    assert m['accuracy'] == pytest.approx(181 / 190) and m['balanced_accuracy'] == pytest.approx(0.7), m
    assert interp.low_recall() == ['fox']
    w = interp.caveats()
    assert [s.split(':')[0] for s in w[:2]] == ['accuracy (95.3%) flatters the model', "class 'fox'"], w
