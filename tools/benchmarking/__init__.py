"""The benchmark commands' modules (tools/README.md lists the commands).

- `measure`: round-robin timing and peak memory; `baseline`: CLIP in the loop, the lower bound;
  `sections`: the measurements of tools/benchmark.py; `report`: its Markdown tables;
  `floor`: the student's FLOPs (fvcore) and the machine's fp32 throughput (the floor);
  `breakdown`: the predictor's time stage by stage against that floor, and ONNX vs eager.
- `train`: the training-step cost (tools/benchmark_train.py); `kmeans`: PLM's K-Means against
  scikit-learn (tools/benchmark_kmeans.py, or `tools/benchmark_train.py --kmeans`).
- `miniworld_tables`: the miniature world's result tables (tools/run_miniworld.py).

The commands in tools/ import this package from beside them; the modules import nothing from
tools/ by path.
"""
