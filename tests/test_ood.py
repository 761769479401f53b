"""The "none of these" check outside the notebook: saved and loaded through a real safetensors file and JSON config,
bounded size, held-out calibration, speed, and real photos when ../shared/data is here."""
import json, math, time
import numpy as np, pytest, torch
from safetensors.torch import save_file, load_file
from imgcls.core import ImgclsError, example_data
from imgcls.ood import DomainCheck, NONE_OF_THESE, fit_domain, auroc, fpr_at, unrelated_photos, _sample


def clusters(n_per, centres, spread=4., seed=0):
    g = torch.Generator().manual_seed(seed)
    d = centres.shape[1]
    x = torch.cat([c + spread * torch.randn(n_per, d, generator=g) / d**0.5 for c in centres])
    return x, torch.arange(len(centres)).repeat_interleave(n_per)


@pytest.fixture(scope='module')
def toy():
    centres = torch.randn(6, 128, generator=torch.Generator().manual_seed(1))
    (tr, yt), (va, _), (te, _), (out, _) = (clusters(n, centres[:5] if i < 3 else centres[5:], seed=i)
                                          for i, n in enumerate((200, 40, 200, 100)))
    return dict(train=tr, labels=yt, valid=va, test=te, out=out)


def test_round_trip_through_files(toy, tmp_path):
    "state() goes into a safetensors file and a JSON config and comes back with the same scores."
    dc = fit_domain(toy['train'], toy['valid'], labels=toy['labels'])
    tensors, config = dc.state()
    save_file({'head.1.weight': torch.zeros(5, 128), **tensors}, tmp_path/'m.safetensors')
    (tmp_path/'m.json').write_text(json.dumps({'arch': 'toy', **config}))
    back = DomainCheck.from_state(load_file(tmp_path/'m.safetensors'), json.loads((tmp_path/'m.json').read_text()))
    np.testing.assert_array_equal(back.score(toy['out']), dc.score(toy['out']))
    assert (back.k, back.threshold, back.info) == (dc.k, dc.threshold, dc.info)
    assert NONE_OF_THESE == 'none of these'


def test_old_and_damaged_models():
    "A model saved before the check is 'missing'; a stripped or altered state is 'tampered', not a crash."
    dc = DomainCheck(torch.randn(50, 16), 5, 0.5)
    tensors, config = dc.state()
    cases = [({}, {'arch': 'x'}, 'missing'), ({}, config, 'tampered'), (tensors, {}, 'tampered'),
             ({'ood.refs': torch.randn(16)}, config, 'tampered'),                       # 1-D refs
             (tensors, {'ood': {**config['ood'], 'k': 500}}, 'tampered'),               # k above the refs
             (tensors, {'ood': {**config['ood'], 'threshold': float('nan')}}, 'tampered')]
    for t, c, kind in cases:
        with pytest.raises(ImgclsError) as e: DomainCheck.from_state(t, c)
        assert e.value.kind == kind, (c, e.value)


def test_size_is_bounded_and_every_class_kept():
    "However many training images, at most max_refs float16 rows are kept, and a class of one image keeps its row."
    x = torch.randn(10_001, 1280)
    labels = torch.cat([torch.zeros(10_000, dtype=torch.long), torch.ones(1, dtype=torch.long)])
    dc = fit_domain(x, torch.randn(20, 1280), max_refs=2048, labels=labels)
    tensors, _ = dc.state()
    assert tensors['ood.refs'].shape == (2048, 1280) and tensors['ood.refs'].dtype == torch.float16
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == 2048 * 1280 * 2
    assert 10_000 in _sample(10_001, 2048, labels, 0).tolist()   # the one-image class
    assert dc.info['n_train'] == 10_001


def test_held_out_calibration(toy):
    "On new images of the known classes, about 1 - keep are called none of these; unrelated ones are caught."
    dc = fit_domain(toy['train'], toy['valid'], labels=toy['labels'], keep=0.9)
    rejected = 1 - dc.in_domain(toy['test']).mean()
    assert 0.03 <= rejected <= 0.15, f'{rejected:.1%} of new in-domain images rejected (calibrated on 200)'
    assert dc.in_domain(toy['out']).mean() == 0
    assert auroc(dc.score(toy['test']), dc.score(toy['out'])) == 1.0


def test_chunks_and_empty(toy):
    "Scoring in chunks gives the same scores; no rows give no scores."
    dc = fit_domain(toy['train'], toy['valid'])
    np.testing.assert_allclose(dc.score(toy['test'], bs=7), dc.score(toy['test']), atol=1e-6)
    assert dc.score(torch.zeros(0, 128)).shape == (0,)
    assert dc.in_domain(np.asarray(toy['out'][:3])).tolist() == [False] * 3   # numpy input too


def test_fpr_matches_threshold(toy):
    "FPR@95 is the share of unrelated images the 95% threshold accepts."
    rng = np.random.default_rng(0)
    i, o = rng.normal(0, 1, 1000), rng.normal(2, 1, 1000)
    assert abs(fpr_at(i, o) - (o <= np.quantile(i, 0.95)).mean()) < 1e-12
    assert 0.3 < fpr_at(i, o) < 0.5   # normal(2) below normal(0)'s 95th percentile (1.645): Phi(-0.355) = 0.36
    assert 0.9 < auroc(i, o) < 0.95   # Phi(2/sqrt(2)) = 0.92


def test_fast_enough():
    "One image against 2048 Lite2-sized references: far under 20% of a 25 ms prediction."
    dc = DomainCheck(torch.randn(2048, 1280), 5, 0.5)
    x = torch.randn(1, 1280)
    for _ in range(5): dc.in_domain(x)
    ts = []
    for _ in range(50):
        t = time.perf_counter(); dc.in_domain(x); ts.append(time.perf_counter() - t)
    assert np.median(ts) < 0.005, f'{1000*np.median(ts):.1f} ms per image'


@pytest.mark.skipif(example_data('hymenoptera_data') is None, reason='needs ../shared/data/hymenoptera_data')
def test_ants_bees_model_catches_unrelated_photos():
    "The ants/bees check keeps 95% of its validation photos and calls none of scikit-image's photos an insect."
    from imgcls.data import image_dataloaders
    from imgcls.learner import image_learner, compute_features, _labels
    learn = image_learner(image_dataloaders(example_data('hymenoptera_data'), bs=32, seed=42, check=False))
    f = lambda items: compute_features(learn, list(items))[0]
    Xv, Xp = f(learn.dls.valid.items), f(unrelated_photos())
    dc = fit_domain(f(learn.dls.train.items), Xv, labels=_labels(learn.dls.train_ds))
    assert dc.in_domain(Xv).sum() == math.ceil((len(Xv) + 1) * 0.95)   # the default keep, conformal rank
    assert dc.in_domain(Xp).sum() == 0, [p.name for p, ok in zip(unrelated_photos(), dc.in_domain(Xp)) if ok]
    assert auroc(dc.score(Xv), dc.score(Xp)) >= 0.98
