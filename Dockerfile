# qlisten as a Hugging Face Docker Space (or any container host): port 7860, user 1000.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
USER user
# QLISTEN_HOME: the run store lives in the user's home (created by useradd, owned by user 1000),
# not in the WORKDIR, which some builders create as root
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_ANALYTICS_ENABLED=False \
    QLISTEN_HOME=/home/user/.qlisten QLISTEN_PREWARM_EXAMPLES=1
WORKDIR $HOME/app
COPY --chown=user requirements.txt .
# torch 2.13.0's CPU build: a plain PyPI torch on Linux is the multi-GB CUDA build
RUN pip install --no-cache-dir --user torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user . .
EXPOSE 7860
CMD ["python", "app.py"]
