__version__ = "0.1.0"

import warnings
# fastai's own imports trip torch's deprecation of torch.jit.script: noise for every imgcls user, nothing they can act on.
warnings.filterwarnings('ignore', message=r'.*torch\.jit\.script.*deprecated', category=FutureWarning)
