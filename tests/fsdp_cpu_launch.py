"""Run ``train/run.py`` under Accelerate's FSDP on CPU ranks (gloo), for the tests.

Accelerate turns ``accelerate launch --use_fsdp`` into FSDP only on an accelerator (CUDA, XPU, ...);
on a CPU it quietly runs DDP. torch's FSDP1 and FSDP2 themselves run on CPU ranks, so this script
lifts Accelerate's gate and then runs the trainer's ``main`` unchanged: the same FSDP code path
(Accelerate's plugin, ``prepare``, ignored neuron modules, checkpoints) that runs on GPUs. Two
CPU-only details are adapted:

* the accelerator state reports ``DistributedType.FSDP`` whenever Accelerate built an FSDP plugin
  (it is re-read from a shared state, so the override is applied on every construction), and
  the plugin gets the run's mixed precision, as Accelerate's own FSDP set-up does;
* FSDP1 gets ``device_id=cpu`` for Accelerate's ``cpu:0`` (torch's FSDP1 accepts only the former);
* the optimizers take their multi-tensor ("foreach") path, their default on CUDA (on a CPU they go
  tensor by tensor), which cannot mix sharded (DTensor) and whole tensors in one parameter group.

Usage (as the tests do): ``ACCELERATE_USE_CPU=1 accelerate launch --use_fsdp --fsdp_version V
--fsdp_sync_module_states false --fsdp_cpu_ram_efficient_loading false --num_processes 2
tests/fsdp_cpu_launch.py --config ...`` (sync_module_states needs an accelerator in Accelerate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import accelerate.state
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FullyShardedDataParallel

_state_init = accelerate.state.AcceleratorState.__init__


def _state_init_fsdp_on_cpu(self, *args, **kwargs):
    _state_init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:  # the first construction
        self.__dict__["_cpu_fsdp_plugin"] = plugin
        if self._mixed_precision != "no":
            plugin.set_mixed_precision(self._mixed_precision)  # as Accelerate does for FSDP
    plugin = self.__dict__.get("_cpu_fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin


_fsdp1_init = FullyShardedDataParallel.__init__


def _fsdp1_init_on_cpu(self, module, *args, **kwargs):
    device_id = kwargs.get("device_id")
    if isinstance(device_id, torch.device) and device_id.type == "cpu":
        kwargs["device_id"] = torch.device("cpu")
    _fsdp1_init(self, module, *args, **kwargs)


accelerate.state.AcceleratorState.__init__ = _state_init_fsdp_on_cpu
sys.modules["torch.optim.optimizer"]._get_foreach_kernels_supported_devices = lambda: ["cpu"]
FullyShardedDataParallel.__init__ = _fsdp1_init_on_cpu

if __name__ == "__main__":
    # launched as a file by `accelerate launch`: this clone's asgl, whether or not it is installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from asgl.train.run import exit_process, main

    exit_process(main(sys.argv[1:]))
