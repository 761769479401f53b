"""Stopping servers that tests start in their own process group (`start_new_session=True`)."""
import os, signal, subprocess

def stop_process_group(proc: subprocess.Popen, term_wait: float = 20, kill_wait: float = 10):
    "Stop `proc` with SIGTERM, then SIGKILL, and kill whatever it left in its group (kernels, workers)."
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        if proc.poll() is not None: break
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: break
        try: proc.wait(wait)
        except subprocess.TimeoutExpired: pass
    try: os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError: pass
