"""Captured output of TensorFlow Lite's Android ``benchmark_model``, one variant per release line
(timings in µs), for the parser tests and the stand-in adb."""

CURRENT = """\
STARTING!
Log parameter values verbosely: [0]
Min num runs: [50]
Num threads: [4]
Min warmup runs: [5]
Graph: [/data/local/tmp/student_int8.tflite]
Use xnnpack: [1]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/student_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
XNNPACK delegate created.
Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
The input model file size (MB): 0.245016
Initialized session in 31.825ms.
Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=121 first=6872 curr=3980 min=3911 max=6872 avg=4122.31 std=318 p5=3925 median=4019 p95=4731

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=248 first=4013 curr=3990 min=3902 max=4598 avg=4031.62 std=101 p5=3921 median=4004 p95=4219

Inference timings in us: Init: 31825, First inference: 6872, Warmup (avg): 4122.31, Inference (avg): 4031.62
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=6.94531 overall=12.5586
"""

NO_PERCENTILES = """\
STARTING!
Num threads: [1]
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
The input model file size (MB): 1.41812
Initialized session in 17.851ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=478 first=2104 curr=1017 min=1012 max=2104 avg=1041.15 std=63

Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=1000 first=1040 curr=1018 min=1012 max=1190 avg=1039.66 std=22

Inference timings in us: Init: 17851, First inference: 2104, Warmup (avg): 1041.15, Inference (avg): 1039.66
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=2.35156 overall=9.23828
"""

OLD = """\
STARTING!
Num runs: [50]
Inter-run delay (seconds): [-1]
Num threads: [2]
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
resolved reporter
Initialized session in 6.066ms
Running benchmark for 1 iterations
count=1 curr=112370

Running benchmark for 50 iterations
count=50 first=101020 curr=100512 min=99730 max=103404 avg=100850 std=710

Average inference timings in us: Warmup: 112370, Init: 6066, no stats: 100850
Peak memory footprint (MB): init=1.95703 overall=31.3438
"""

OP_PROFILING = CURRENT.replace("Memory footprint delta", """\
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [first]\t  [avg ms]\t      [%]\t    [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t           12.871\t    12.871\t  98.731%\t   98.731%\t  3112.000\t        1\tModifyGraphWithDelegate/0
\t         AllocateTensors\t            0.165\t     0.165\t   1.269%\t  100.000%\t     0.000\t        1\tAllocateTensors/0

Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [first]\t  [avg ms]\t      [%]\t    [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t   TfLiteXNNPackDelegate\t            3.702\t     3.611\t  89.604%\t   89.604%\t     0.000\t        1\t[StatefulPartitionedCall:0]:61
\t                ARG_MAX\t            0.402\t     0.399\t   9.901%\t   99.505%\t     0.000\t        1\t[ArgMax]:62
\t                   CAST\t            0.020\t     0.020\t   0.495%\t  100.000%\t     0.000\t        1\t[labels]:63

============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t   TfLiteXNNPackDelegate\t        1\t     3.611\t    89.604%\t    89.604%\t     0.000\t        1
\t                ARG_MAX\t        1\t     0.399\t     9.901%\t    99.505%\t     0.000\t        1
\t                   CAST\t        1\t     0.020\t     0.495%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=248 first=4124 curr=4030 min=3980 max=4420 avg=4030 std=70
Memory (bytes): count=0
3 nodes observed

Memory footprint delta""")

CRASH = """\
STARTING!
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?
ERROR: Registration failed.
Failed to construct interpreter
Benchmarking failed.
"""
