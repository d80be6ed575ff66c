"""Inference without TensorFlow: export a run (:mod:`.export`), run it with numpy (:mod:`.numpy_net`) or
ONNX Runtime, load any of them as a run (:mod:`.load`).

Only :mod:`.export` imports Keras; :mod:`.numpy_net` and :mod:`.load` need numpy and h5py
(and ``onnxruntime`` for ``.onnx`` files).
"""
