"""Cleaning: every move undoable byte for byte, the cleaner on a model in the safe format, opening on the suspects of the
label check, and pickles refused unopened. The real-photo test skips, saying why, when `example_data('hymenoptera_data')` is None."""
import pickle, shutil
from pathlib import Path
import pytest
from imgcls.core import ImgclsError, example_data, image_files, make_toy_images, quarantine_dir
from imgcls.clean import ALL, DELETE, SUSPECTS, Cleaner, apply_changes, read_log, undo

ANTS = example_data('hymenoptera_data')
NO_ANTS = 'real photos absent: example_data("hymenoptera_data") is None (no shared/data/hymenoptera_data and no $IMGCLS_DATA)'


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
    assert (data/'valid'/'triangle'/va[1].name).read_bytes() == before[va[1].relative_to(data)]
    assert len(image_files(quarantine_dir(data))) == 2                                          # quarantined, not deleted
    undone = undo(data, n=len(done))
    assert [e['of'] for e in undone] == [5, 4, 3, 2, 1]
    assert snapshot() == before
    assert sorted(p.name for p in (data/'valid').iterdir()) == ['circle', 'square'] and image_files(quarantine_dir(data)) == []
    assert [e['action'] for e in read_log(data)] == ['relabel', 'delete', 'relabel', 'relabel', 'delete'] + ['undo'] * 5


def test_cleaner_on_safe_model(tmp_path):
    "The cleaner opens on a safe model, shows a ranked suspect first, and its one-click suggestion moves it, undoably."
    from imgcls.training import train
    data = make_toy_images(tmp_path/'data', 12)
    res = train(data, 'efficientnet_lite0', epochs=5, top_epochs=0, out=tmp_path/'model.safetensors', verbose=False)
    bad = image_files(data/'square')[0]
    flipped = data/'circle'/bad.name
    bad.rename(flipped)
    before = {f: f.read_bytes() for f in image_files(data)}
    c = Cleaner.from_model(res['model_path'], data, order=[(flipped, 'circle', 'square')], max_n=6)
    assert len(c.table) == 24 and c.dd_split.value == SUSPECTS
    assert c.shown().path.tolist() == [str(flipped.resolve())]
    c.cards[0].children[3].click()                                    # the suggestion button
    c.dd_split.value = 'Train'; c.dd_split.value = SUSPECTS           # switching views keeps the choice
    assert c.choices == {str(flipped.resolve()): 'square'}
    assert [e['action'] for e in c.apply()] == ['relabel']
    assert bad.read_bytes() == before[flipped] and not flipped.exists()
    c.undo()
    assert {f: f.read_bytes() for f in image_files(data)} == before


def test_cleaner_refuses_pickle_unopened(tmp_path):
    data = make_toy_images(tmp_path/'data', 6)
    marker = tmp_path/'pwned'
    class Payload:
        def __reduce__(self): return (Path.touch, (marker,))
    (tmp_path/'model.pkl').write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ImgclsError) as e: Cleaner.from_model(tmp_path/'model.pkl', data)
    assert (e.value.kind, marker.exists()) == ('unsafe', False), str(e.value)
    assert 'allow_pickle=True' in str(e.value), str(e.value)


def test_cleaner_opens_on_label_check_suspects(tmp_path):
    "5 training ants filed under bees: the cleaner opens on them (label check, no order given), moves nothing until a click, and undo restores every byte."
    if ANTS is None: pytest.skip(NO_ANTS)
    from imgcls.training import train
    data = Path(shutil.copytree(ANTS, tmp_path/'data'))
    moved = [str(Path(shutil.move(f, data/'train'/'bees'/f.name)).resolve()) for f in image_files(data/'train'/'ants')[:5]]
    res = train(data, 'efficientnet_lite2', top_epochs=0, out=tmp_path/'model.safetensors', verbose=False)
    before = {f: f.read_bytes() for f in image_files(data)}
    c = Cleaner.from_model(res['model_path'], data, max_n=12)
    assert ({f: f.read_bytes() for f in image_files(data)} == before, read_log(data)) == (True, [])   # opening moves nothing
    assert (c.dd_split.value, c.dd_class.value, len(c.table)) == (SUSPECTS, ALL, res['n_train'] + res['n_valid'])
    shown = c.shown()
    on_screen = [(card, p) for card, p in zip(c.cards, shown.path) if p in moved]
    assert len(on_screen) >= 4, f'{len(on_screen)} of the 5 moved ants among the first cards: {shown[["label", "suggested", "p_label"]]}'
    assert {(card.children[3].description, card.children[3].layout.visibility) for card, _ in on_screen} == {('→ ants', 'visible')}
    card, path = on_screen[0]
    card.children[3].click()                                          # the one-click suggestion
    c.dd_split.value = 'Valid'; c.dd_class.value = 'bees'; c.dd_split.value = SUSPECTS; c.dd_class.value = ALL
    assert c.choices == {path: 'ants'}                                # kept across switches
    assert {f: f.read_bytes() for f in image_files(data)} == before   # chosen, not applied: nothing moved yet
    done = c.apply()
    assert [(e['action'], e['new_label']) for e in done] == [('relabel', 'ants')]
    assert Path(done[0]['dst']).read_bytes() == before[Path(path)] and not Path(path).exists()
    c.undo()
    assert {f: f.read_bytes() for f in image_files(data)} == before   # every file back, byte for byte
