"""A tiny nnU-Net v2 plans file, as ``nnUNetv2_plan_and_preprocess`` writes it (``nnUNetPlans.json``),
at test sizes: three stages of 4-16 features, 16-32 voxel patches.

``3d_fullres`` is a ``PlainConvUNet`` with an anisotropic first stage (kernel 1x3x3, stride 1x2x2 in
the plans' axis order, as nnU-Net plans thick-slice data) and ``transpose_forward`` [2, 0, 1];
``3d_resenc`` inherits from it (nnU-Net's ``inherits_from``) and swaps in a ``ResidualEncoderUNet``
(the ``nnUNetResEncUNetPlans`` family).
"""

from __future__ import annotations

import json
from pathlib import Path

CONV_ARGS = {
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def tiny_plans() -> dict:
    plain = dict(CONV_ARGS, n_stages=3, features_per_stage=[4, 8, 16], n_conv_per_stage=[1, 1, 1],
                 n_conv_per_stage_decoder=[1, 1])
    residual = dict(CONV_ARGS, n_stages=3, features_per_stage=[4, 8, 16], n_blocks_per_stage=[1, 1, 1],
                    n_conv_per_stage_decoder=[1, 1])
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 1.0, 1.0],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [2, 0, 1],
        "transpose_backward": [1, 2, 0],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [16, 32, 24],
                "spacing": [3.0, 1.0, 1.5],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": plain,
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
                "batch_dice": True,
            },
            "3d_resenc": {
                "inherits_from": "3d_fullres",
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                    "arch_kwargs": residual,
                    "_kw_requires_import": REQUIRES_IMPORT,
                },
            },
        },
    }


def write_tiny_plans(folder: Path) -> Path:
    path = Path(folder) / "nnUNetPlans.json"
    path.write_text(json.dumps(tiny_plans(), indent=2), encoding="utf-8")
    return path
