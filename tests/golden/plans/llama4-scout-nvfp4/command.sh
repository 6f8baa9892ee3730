vllm serve nvidia/Llama-4-Scout-17B-16E-Instruct-NVFP4 \
  --host 127.0.0.1 \
  --port 8000 \
  --dtype auto \
  --gpu-memory-utilization 0.88 \
  --max-num-seqs 1 \
  --max-model-len 110000 \
  --enable-prefix-caching \
  --trust-remote-code \
  --served-model-name llama4-scout-nvfp4
