vllm serve IQuestLab/IQuest-Coder-V1-40B-Instruct-nvfp4 \
  --host 127.0.0.1 \
  --port 8000 \
  --dtype auto \
  --gpu-memory-utilization 0.9 \
  --max-num-seqs 1 \
  --max-model-len 32768 \
  --served-model-name iquest-coder-40b-nvfp4
