-- Throughput runs: the request (path, headers) comes from wrk's command line (-H).
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
