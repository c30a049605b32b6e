"""The model: what a model file says (`specs.py`), the file itself (`modelfile.py`: safetensors, never
a pickle), the torch policy it builds (`policy.py`: camera encoder, liquid core, readout, and its
running form), the running step both backends share (`step.py`) and the ONNX export (`export.py`).
No ROS and no MuJoCo here; the controller that runs a model is in `runtime/`."""
