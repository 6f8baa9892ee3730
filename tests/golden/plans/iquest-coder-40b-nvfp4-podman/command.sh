podman run \
  -d \
  --name orch-iquest-coder-40b-nvfp4-podman \
  --label orch.profile=iquest-coder-40b-nvfp4-podman \
  --label orch.plan=283b720d3d4a368c \
  --init \
  --device nvidia.com/gpu=all \
  -p 127.0.0.1:8000:8000 \
  --shm-size 16g \
  -v /mnt/data/hf/hub:/root/.cache/huggingface/hub:z \
  -e HF_HOME=/root/.cache/huggingface \
  docker.io/vllm/vllm-openai:latest IQuestLab/IQuest-Coder-V1-40B-Instruct-nvfp4 \
  --host 0.0.0.0 \
  --port 8000 \
  --dtype auto \
  --gpu-memory-utilization 0.9 \
  --max-num-seqs 1 \
  --max-model-len 32768 \
  --served-model-name iquest-coder-40b-nvfp4-podman
