"""Shared test settings.

One intra-op thread: the test models are tiny, where a second thread costs more
in synchronisation than it gains (measured 4.6x slower per evaluation on a busy
2-core machine), and results stay bit-identical run to run.
"""

import torch

torch.set_num_threads(1)

