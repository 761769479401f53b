"""Fixtures shared by several test files."""
import pytest

@pytest.fixture(scope='session')
def toy_model(tmp_path_factory):
    "A toy lite0 model trained once per session with `export_pkl=True`: `train`'s result (safe pair and fastai's export) and its images' folder."
    from imgcls.core import make_toy_images
    from imgcls.training import train
    tmp = tmp_path_factory.mktemp('toy_model')
    toy = make_toy_images(tmp/'toy', 12)
    res = train(toy, 'efficientnet_lite0', size=64, out=tmp/'safe'/'model.safetensors', export_pkl=True, verbose=False)
    return res, toy
