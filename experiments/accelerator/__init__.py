"""One command that proves jaxcnn on a GPU within a fixed time: ``python -m experiments.accelerator``.

Phases (each in its own process, so each starts with the whole GPU memory):

1. ``tests``: a chosen subset of the platform-independent tests (the functional parity grid
   against PyTorch, models, train steps) under pytest, JUnit XML + log;
2. ``bench`` (:mod:`experiments.accelerator.bench`): ResNet-50 bfloat16 train-step images/s
   and MFU, jaxcnn against PyTorch in the same process, plus ResNet-18 and U-Net steps;
3. ``train``: ``fashion_resnet18`` for its full config, or as many epochs as the remaining
   budget holds (the summary says which), with its run artefacts.

``docs/accelerators.md`` describes the outputs and the exact command for the GPU machines.
"""
