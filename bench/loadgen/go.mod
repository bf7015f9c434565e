module tollway.dev/bench/loadgen

go 1.19
