"""The app's figures in one run: kernel memory, time to the controls, server memory after 12 visits.

    PYTHONPATH=$PWD python bench/app.py MODEL [--preheat 0|1] [--torch]

--torch serves a copy of MODEL saved without model.onnx, so the kernels run the torch `Classifier` (the "before" of the
torch-free kernel); without it, a model saved with model.onnx is served by the torch-free `OnnxClassifier`.

MODEL: a safe model (e.g. a folder made by `imgcls new`, or tests' ants/bees model). Needs /usr/bin/chromium.
Prints one line per figure. RSS counts shared library pages once per process; USS (private) is what each
extra kernel really adds.
"""
import argparse, socket, subprocess, sys, time, os, signal
from pathlib import Path
import psutil

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def kernels(pid):
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if 'ipykernel' in ' '.join(p.cmdline()): out.append(p)
        except psutil.Error: pass   # exited meanwhile (a zombie until reaped)
    return out

def total_rss(pid):
    p = psutil.Process(pid)
    n = p.memory_info().rss
    for c in p.children(recursive=True):
        try: n += c.memory_info().rss
        except psutil.Error: pass
    return n

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('model'); ap.add_argument('--preheat', type=int, default=1)
    ap.add_argument('--torch', action='store_true', help='serve a copy saved without model.onnx: torch kernels')
    a = ap.parse_args()
    if a.torch:
        import tempfile
        from imgcls.inference import load_classifier
        from imgcls.modelfile import save_safe
        clf = load_classifier(a.model, runtime='torch')
        a.model = str(save_safe(clf.model, Path(tempfile.mkdtemp())/'model', extras=clf.extras, extra_config=clf.extra_config, onnx=False))
    print(f'serving {a.model} ({"torch" if a.torch else "torch-free when it has model.onnx"})')
    port = free_port(); url = f'http://127.0.0.1:{port}/'
    cmd = [sys.executable, '-c', 'from imgcls.cli import main; main()', 'app', a.model, '--port', str(port), '--preheat', str(a.preheat),
           '--max-kernels', '4', '--orphan-seconds', '10']
    r = subprocess.run([sys.executable, '-c', 'import sys, imgcls.app; print("fastai" in sys.modules, open("/proc/self/status").read().split("VmRSS:")[1].split()[0])'],
                       capture_output=True, text=True)
    print(f'importing imgcls.app: fastai imported {r.stdout.split()[0]}, RSS {int(r.stdout.split()[1])/1e3:.0f} MB')
    log = open('/tmp/imgcls-bench-app.log', 'w+')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    filled = lambda: open(log.name).read().count('is filled with')   # Voila logs each time the preheat pool is full
    from playwright.sync_api import sync_playwright, expect
    try:
        t0 = time.time()
        while True:
            try: socket.create_connection(('127.0.0.1', port), 1).close(); break
            except OSError: time.sleep(0.5)
        while a.preheat and filled() < 1: time.sleep(0.5)   # the preheated kernel has started and runs the page
        time.sleep(10 if a.preheat else 2)                   # ... and has loaded the model
        print(f'server up + preheat settled: {time.time()-t0:.0f} s')
        idle = total_rss(proc.pid)
        print(f'idle server total RSS (server + {len(kernels(proc.pid))} kernel(s)): {idle/1e6:.0f} MB')
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox', '--disable-gpu'])
            times = []
            for i in range(12):
                page = b.new_page(viewport={'width': 1200, 'height': 900})
                t = time.time(); page.goto(url, timeout=180_000)
                expect(page.locator('.imgcls-pickbtn')).to_be_visible(timeout=180_000)
                times.append(time.time() - t)
                if i == 0:
                    nav = page.evaluate('(() => { const t = performance.timing; return [t.responseEnd - t.navigationStart, t.loadEventEnd - t.navigationStart]; })()')
                    print(f'first visit: page HTML received after {nav[0]/1e3:.1f} s, page loaded after {nav[1]/1e3:.1f} s (the rest is the widgets connecting)')
                    visitor = [k for k in kernels(proc.pid)]
                    for k in visitor:
                        m = k.memory_full_info()
                        print(f'kernel {k.pid}: RSS {m.rss/1e6:.0f} MB, USS (private) {m.uss/1e6:.0f} MB')
                page.close()
                if i == 0:   # the second visit also finds a preheated kernel
                    while a.preheat and filled() < 2: time.sleep(0.5)
                    time.sleep(10)
            print(f'controls visible after: first visit {times[0]:.1f} s, second (pool refilled) {times[1]:.1f} s, '
                  f'back-to-back visits 3-12: median {sorted(times[2:])[len(times[2:])//2]:.1f} s')
            b.close()
        t = time.time()
        while time.time() - t < 60 and total_rss(proc.pid) - idle > 200e6: time.sleep(2)
        print(f'server total RSS after 12 visits, closed: {total_rss(proc.pid)/1e6:.0f} MB ({(total_rss(proc.pid)-idle)/1e6:+.0f} MB vs idle) '
              f'after {time.time()-t:.0f} s; {len(kernels(proc.pid))} kernel(s)')
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)

if __name__ == '__main__': main()
