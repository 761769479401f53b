"Integration tests of imgcls.download and imgcls.dataset: killed runs, address blocking, path safety, the CLI. Only 127.0.0.1 servers."
import json, os, signal, subprocess, sys, time, types
from urllib.parse import quote

import pandas as pd
import pytest

import imgcls.download as dl
import imgcls.dataset as ds
import imgcls.fetch
from imgcls.core import image_files, make_toy_images, open_rgb
from imgserver import ImageServer


def _toy_files(tmp_path, n_per_class=20):
    "{name: bytes} for 2*n_per_class distinct toy images."
    root = make_toy_images(tmp_path/'toy-src', n_per_class=n_per_class)
    return {f.name: f.read_bytes() for f in image_files(root)}


def _manifest(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


_RUN = """
import json, sys
from imgcls.download import download_images
download_images(sys.argv[1], json.loads(sys.argv[2]), allow_private=True, n_workers=4, progress=False)
"""


def test_kill_and_resume(tmp_path):
    files = _toy_files(tmp_path)
    dest = tmp_path/'dest'
    with ImageServer(files, latency=0.25) as srv:
        urls = [srv.url(f'img/{n}') for n in files]
        urls.append(srv.url(f'redirect/1/{next(iter(files))}'))  # the same picture again: one duplicate
        p = subprocess.Popen([sys.executable, '-c', _RUN, str(dest), json.dumps(urls)])
        try:
            deadline = time.time() + 30
            while time.time() < deadline and len(list(dest.glob('*.jpg'))) < 8: time.sleep(0.02)
            assert p.poll() is None, 'the first run finished before it could be killed; make the server slower'
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        finally:
            if p.poll() is None: p.kill()
        first = len(list(dest.glob('*.jpg')))
        assert 8 <= first < len(files)
        # What a kill can leave behind: a temporary file, and a manifest row cut in half.
        (dest/'.imgcls-deadbeefdeadbeef.part').write_bytes(b'\xff\xd8\xff half a picture')
        with open(dest/'manifest.csv', 'a') as f: f.write(f'{srv.url("img/x")},dest,half a ro')
        hits_before = sum(srv.hits.values())

        report = dl.download_images(dest, urls, allow_private=True, n_workers=8, progress=False)

    assert report.counts() == {'saved': len(files), 'duplicate': 1}, report
    assert sum(r.resumed for r in report) >= first - 1
    assert sum(srv.hits.values()) - hits_before <= len(urls) - (first - 1)  # what was done is not fetched again
    names = sorted(f.name for f in dest.iterdir())
    assert not [n for n in names if n.startswith('.') or n.endswith('.part')], names
    saved = sorted(dest.glob('*.jpg'))
    assert len(saved) == len(files)  # every picture, once
    assert len({dl.pixel_hash(open_rgb(f)) for f in saved}) == len(files)
    man = _manifest(dest/'manifest.csv')
    assert man.url.is_unique, man[man.url.duplicated(keep=False)]
    assert sorted(man[man.status == 'saved'].path) == sorted(f.name for f in saved)
    assert (man.status == 'duplicate').sum() == 1
    assert (dest/'manifest.csv').read_bytes().endswith(b'\n')


def test_blocked_by_default(tmp_path, monkeypatch):
    files = _toy_files(tmp_path, 1)
    name = next(iter(files))
    with ImageServer(files) as srv:
        rep = dl.download_images(tmp_path/'d', [srv.url(f'img/{name}'), f'http://[::1]:{srv.port}/img/{name}',
                                                 'http://localhost:9/x.jpg', 'http://169.254.169.254/latest/meta-data/'],
                                 timeout=1, progress=False)
        assert [r.reason for r in rep] == ['blocked address'] * 4, rep.df
        assert sum(srv.hits.values()) == 0
        assert not list((tmp_path/'d').glob('*.jpg'))

        # Each redirect hop is checked again. Pretend 127.0.0.1 is public so the first hop is allowed,
        # then redirect to 127.0.0.2 (private, and nothing listens there).
        monkeypatch.setattr(imgcls.fetch, 'is_public_address', lambda ip: ip == '127.0.0.1')
        to = lambda u: srv.url('to/' + quote(u, safe=''))
        rep = dl.download_images(tmp_path/'e', [srv.url(f'img/{name}'), to(f'http://127.0.0.2:{srv.port}/img/{name}'),
                                                 to('file:///etc/passwd'), to(f'http://[::1]:{srv.port}/img/{name}')],
                                 timeout=1, progress=False)
        assert [r.reason or r.status for r in rep] == ['saved', 'blocked address', 'not http(s)', 'blocked address'], rep.df
        assert srv.hits[f'/img/{name}'] == 1


def test_nothing_written_outside_dest(tmp_path):
    files = _toy_files(tmp_path, 2)
    before = {p for p in tmp_path.rglob('*')}
    dest = tmp_path/'a'/'dest'
    with ImageServer(files, default=next(iter(files))) as srv:
        urls = [srv.url(p) for p in ['any/..%2F..%2F..%2Fescaped.jpg', 'any/%2e%2e/%2e%2e/escaped2.jpg',
                                     'any/x.jpg?name=../../escaped3.jpg', 'any/..%5C..%5Cescaped4.jpg',
                                     'any/%00.jpg', 'any/' + 'x' * 300 + '.jpg']]
        urls.append(srv.url('img/') + '../../' + quote(next(iter(files))))  # dot segments in the URL itself
        rep = dl.download_images(dest, urls, allow_private=True, label='../../evil', progress=False)
        assert rep.counts()['saved'] == 1 and rep.counts()['duplicate'] == 5
        summary = ds.build_dataset(tmp_path/'a'/'ds', {'../../up': ['x'], '/abs/path': ['y']}, 2, allow_private=True,
                                   search=lambda q, n, **kw: [dict(url=u) for u in urls[:n]], min_per_class=0,
                                   progress=False, verbose=False)
    assert set(summary) == {'up', 'abs_path'}
    new = {p for p in tmp_path.rglob('*')} - before
    outside = [p for p in new if not p.is_relative_to(tmp_path/'a')]
    assert outside == [], outside
    assert {p.parent for p in new if p.is_file()} <= {dest, tmp_path/'a'/'ds', tmp_path/'a'/'ds'/'up', tmp_path/'a'/'ds'/'abs_path'}


def _fake_search_module(srv, names):
    "A stand-in `imgcls.search` whose `search_images` returns records for the files on `srv`."
    mod = types.ModuleType('imgcls.search')
    def search_images(term, max_images=200, **kw):
        mod.calls.append((term, max_images, kw))
        return [dict(url=srv.url(f'img/{n}'), title=n, source=srv.url('page'), query=term) for n in names if n.startswith(term)][:max_images]
    mod.search_images, mod.calls = search_images, []
    return mod


def test_cli_download_direct(tmp_path, monkeypatch, capsys):
    files = _toy_files(tmp_path, 6)
    with ImageServer(files) as srv:
        fake = _fake_search_module(srv, sorted(files))
        monkeypatch.setitem(sys.modules, 'imgcls.search', fake)
        ds.cli_download(tmp_path/'ds', 'circle', 'boxes=square', n=4, type='photo', allow_private=True, min_per_class=1)
        out = capsys.readouterr().out
        assert 'circle' in out and 'boxes' in out  # the summary table (progress bars above it)
        assert fake.calls[0][2] == {'type_image': 'photo'}
        ds.cli_download(tmp_path/'ds', 'circle', 'boxes=square', n=5, json=True, allow_private=True, min_per_class=1)
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v['images'] for k, v in res.items()} == {'circle': 5, 'boxes': 5}
    assert res['circle']['earlier'] >= 4


def test_cli_download_through_dispatcher(tmp_path, monkeypatch, capsys):
    from imgcls.cli import run
    files = _toy_files(tmp_path, 4)
    with ImageServer(files) as srv:
        monkeypatch.setitem(sys.modules, 'imgcls.search', _fake_search_module(srv, sorted(files)))
        rc = run(['download', str(tmp_path/'ds'), 'circle', 'boxes=square', '--n', '3', '--json', '--allow-private',
                  '--min-per-class', '1'])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v['images'] for k, v in res.items()} == {'circle': 3, 'boxes': 3}


def _offline(monkeypatch):
    "Make `imgcls.search` fail as it does without a network: ddgs raises its DNS error, and the back-off does not wait."
    import imgcls.search as search
    from ddgs.exceptions import DDGSException
    class NoNetwork:
        def images(self, *a, **kw): raise DDGSException("DNSError: DNSError('error sending request for url (https://duckduckgo.com/?q=grizzly) > error resolving DNS')")
    monkeypatch.setattr(search, 'DDGS', NoNetwork)
    monkeypatch.setattr(search, 'backoff_delay', lambda *a, **kw: 0)


def test_cli_download_offline(tmp_path, monkeypatch, capfd):
    "Offline, `imgcls download` says why in the summary and on one line, exits 1, and shows no Python warning."
    from imgcls.cli import run
    _offline(monkeypatch)
    rc = run(['download', str(tmp_path/'bears'), 'grizzly', '--n', '3'])
    out, err = capfd.readouterr()
    assert rc == 1
    assert "grizzly: search failed: DuckDuckGo could not be reached (searching 'grizzly', page 1, 5 tries): DDGSException: DNSError" in out
    assert err.startswith("imgcls download: error: no images for 'grizzly': the image search failed: DuckDuckGo could not be reached"), err
    assert len(err.strip().splitlines()) == 1, err
    assert 'Warning' not in out + err


def test_build_dataset_offline_raises(tmp_path, monkeypatch):
    "`build_dataset` raises the search's reason, with its kind, when a class got no images because its search failed."
    from imgcls.core import ImgclsError
    _offline(monkeypatch)
    with pytest.raises(ImgclsError, match='DuckDuckGo could not be reached') as e:
        ds.build_dataset(tmp_path/'bears', ['grizzly', 'black=black bear'], 3, progress=False, verbose=False)
    assert e.value.kind == 'connection'
    assert e.value.info['classes'] == ['grizzly', 'black']
    assert {k: s['images'] for k, s in e.value.info['summary'].items()} == {'grizzly': 0, 'black': 0}
