numactl \
  --cpunodebind=0 \
  --membind=0 \
  podman run \
  -d \
  --name orch-llama4-scout-q6k-cpu \
  --label orch.profile=llama4-scout-q6k-cpu \
  --label orch.plan=d64f3c948e2e1c13 \
  --init \
  -p 127.0.0.1:8081:8080 \
  --shm-size 16g \
  --cap-add=SYS_NICE \
  --cap-add=IPC_LOCK \
  --ulimit memlock=-1:-1 \
  -v /mnt/data/models:/models:ro,Z \
  compute.home.arpa/llamacpp-zen5 \
  --host 0.0.0.0 \
  --port 8080 \
  --model /models/Scout-17B-Q6_K.gguf \
  --alias llama4-scout-q6k-cpu \
  --jinja \
  --ctx-size 8192 \
  --threads 16 \
  --threads-batch 16 \
  --batch-size 2048 \
  --ubatch-size 512 \
  --flash-attn on \
  --parallel 1 \
  --mlock \
  --metrics
