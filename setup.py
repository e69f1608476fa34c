"""skd-tf: structured knowledge distillation for semantic segmentation, to TFLite."""

from setuptools import find_packages, setup

setup(
    name="skd-tf",
    version="0.1.0",
    description="Structured knowledge distillation of segmentation networks in TensorFlow/Keras, "
                "with TFLite export and on-device benchmarking",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["skd_tf", "skd_tf.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9.9,<4.10",
        "numpy>=1.26,<3",
        "pydantic>=2.10,<3",
        "pyyaml>=6,<7",
        "pillow>=10,<13",
        "tqdm>=4.66,<5",
        "scipy>=1.11,<2",  # connected components of the error split (evaluation.errors), t-quantiles
        "matplotlib>=3.8,<4",
        "tensorboard>=2.20,<3",
        "ai-edge-litert>=2.3,<3",  # TFLite runtime (interpreter, analyzer, litert-benchmark)
        "tensorflow-model-optimization>=0.8.1,<0.9",  # QAT only; imported only on that path
        "tf_keras>=2.21,<2.22",  # the Keras 2 that tfmot needs (QAT mirror of the student)
        "importlib_resources>=6",  # needed by tfds download_and_prepare (etils), not declared by it
    ],
    extras_require={
        # Reading PyTorch checkpoints (`skd-tf import`, `model.pretrained: file.pth`); nothing else needs torch.
        "torch": ["torch>=2.1,<3"],
        # 2.13.0 is the CPU build of torch (a plain `torch` resolves to a multi-GB CUDA build).
        # The documentation site: mkdocs with the Material theme and the API reference from the docstrings.
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26,<2"],
        "dev": ["pytest>=8,<9.2",  # 9.2 breaks xdist's --dist loadgroup (pytest-dev/pytest-xdist#1386)
                 "pytest-timeout>=2.3,<3", "pytest-xdist>=3.6,<4", "torch==2.13.0",
                "mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26,<2"],
    },
    entry_points={"console_scripts": ["skd-tf=skd_tf.cli:main"]},
)
