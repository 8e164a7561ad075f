"""Ahead-of-time compiles of the fused augmentation kernel for sm_80 and sm_90 (no GPU needed).

The interpreter tests (tests/test_augment.py) check its arithmetic; these check that the kernel
lowers for the GPUs it runs on without spilling, for the CIFAR recipe (3 channels, 32x32, every
step on), without AutoAugment, and for a one-channel image with AutoAugment alone.
"""

from __future__ import annotations

import pytest
from aot_util import KernelSpec, compile_kernels

from asgl.train.data.augment_triton import num_warps

pytestmark = pytest.mark.aot

SIGNATURE = {
    "x_ptr": "*u8", "out_ptr": "*u8", "scratch_ptr": "*i32", "lut_ptr": "*i32", "shift_ptr": "*i64",
    "flip_ptr": "*i1", "policy_ptr": "*i64", "u_ptr": "*fp32", "sign_ptr": "*fp32", "cut_y_ptr": "*i64",
    "cut_x_ptr": "*i64", "table_ptr": "*fp32", "B": "i32", "H": "i32", "W": "i32",
}


def spec(arch, *, C, BLOCK, crop, flip, autoaugment, cutout):
    constexprs = dict(CUTOUT=cutout, C=C, BLOCK=BLOCK, HAS_CROP=crop, HAS_FLIP=flip, HAS_AUTOAUGMENT=autoaugment,
                      HAS_CUTOUT=cutout > 0)
    signature = {**SIGNATURE, **{k: "constexpr" for k in constexprs}}
    label = f"augment sm_{arch} C={C} BLOCK={BLOCK} crop={crop} flip={flip} aa={autoaugment} cutout={cutout}"
    return KernelSpec("asgl.train.data.augment_triton:_augment_kernel", signature, constexprs,
                      ("x_ptr", "out_ptr", "scratch_ptr", "lut_ptr"), arch, num_warps(BLOCK), label)


def test_augment_kernel_compiles_for_sm80_and_sm90():
    specs = [spec(arch, C=3, BLOCK=1024, crop=True, flip=True, autoaugment=True, cutout=16) for arch in (80, 90)]
    specs += [spec(90, C=1, BLOCK=64, crop=False, flip=False, autoaugment=True, cutout=0),
              spec(90, C=3, BLOCK=1024, crop=True, flip=True, autoaugment=False, cutout=16)]
    results = compile_kernels(specs)
    for r in results:
        assert not r.error, f"{r.spec.label}: {r.error[-2000:]}"
        assert r.ptx and r.registers > 0, r.spec.label
        print(f"{r.spec.label}: {r.registers} registers, {r.spill_bytes} spill bytes")
        assert r.spill_bytes == 0, f"{r.spec.label}: {r.spill_bytes} spill bytes"
