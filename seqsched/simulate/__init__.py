"""Simulation: no model, modelled time. The static-batch simulator (``static``), a model of
vLLM v1's scheduler (``vllm_model``) behind a continuous engine (``stream``) and a server
under load (``server``), the costs they price steps with (``cost_model``, ``step_cost``,
fitted by ``fit``), calibration against a real model or vLLM (``calibrate``,
``calibrate_vllm``) and the fit of a server's own overhead (``server_overhead``).

Every simulator drives the same scheduling code as the real engines and the server
(``seqsched.schedule``): a simulated number and a measured one come from one policy."""
