#!/usr/bin/env bash
# Builds lukv-small (issue 16): a 12-layer Llama trained at 32k tokens on the broad corpus
# and the trained format families of eval/formats, with a chat template. Training spans
# several device calls (each at most 10 minutes): every call trains --run-seconds more of one
# fixed schedule (--time-budget in all) and returns a checkpoint that the next call resumes.
#
# Here (development machine), once the corpora exist (scripts/corpus/README.md):
#   bash scripts/small-model.sh prepare        # fills train-carry/ (git-ignored): the corpus
#                                              # files the run reads, make-train-data (xz)
# Device call 1 (tool `run`, kind nvidia-h200, timeout 600, carry ["train-carry"]):
#   RUN_SECONDS=400 bash scripts/small-model.sh train
# It trains the tokenizer (broad documents + format samples + chat tokens), then the model,
# and writes to $OUT: model.safetensors.part-* and lukv-small-files.tgz (config, tokenizer,
# generation config, train_state.json, loss.csv, loss.png, train_log.json) and log.
#   bash scripts/small-model.sh adopt DIR       # here: DIR (where they came back) -> train-carry/ckpt
# Device call 2 (same carry): RESUME=1 RUN_SECONDS=480 bash scripts/small-model.sh train
# resumes from train-carry/ckpt (same tokenizer) and also writes transformers' goldens.
#
# Knobs (environment): TIME_BUDGET (880: seconds of training over all calls), RUN_SECONDS,
# PHASES, SEED (1234), EXTRA_TRAIN_ARGS, CALL_SECONDS (590: the call's limit; training gets a
# SIGTERM 45 s before it, and saves), GOLDENS (1: also write transformers' goldens).
set -euo pipefail
cd "$(dirname "$0")/.."
C=train-carry
SPECIAL="<|system|>,<|user|>,<|assistant|>,<|end|>"
# The model (issue 16: >= 12 layers, >= 4 KV heads, 32k context, <= 32 MiB of weights).
ARCH="--layers 12 --hidden 256 --inter 768 --heads 8 --kv-heads 4 --rope-theta 10000000 --max-pos 32768"
PHASES=${PHASES:-2048:64:0.30,4096:32:0.20,16384:8:0.25,32768:4:0.25}

case ${1:-} in
prepare)
	grep -qx '/train-carry/' .git/info/exclude 2>/dev/null || echo '/train-carry/' >>.git/info/exclude
	mkdir -p $C
	for f in data/broad/train.jsonl.gz data/corpus/words_train_adj.txt data/corpus/words_train_noun.txt; do
		test -s "$f" || { echo "small-model.sh: $f missing: build the corpora first (scripts/corpus/README.md)" >&2; exit 2; }
		cp "$f" $C/
	done
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $C/make-train-data ./scripts/make-train-data
	xz -f -6 $C/make-train-data
	du -sh $C/*
	;;
adopt)
	src=${2:?usage: small-model.sh adopt DIR}
	rm -rf $C/ckpt && mkdir -p $C/ckpt
	tar xzf "$src/lukv-small-files.tgz" -C $C/ckpt
	cat "$src"/model.safetensors.part-* >$C/ckpt/model.safetensors
	ls -l $C/ckpt
	;;
train)
	mkdir -p "${OUT:-out}"
	OUTDIR=$(cd "${OUT:-out}" && pwd)
	W=/tmp/lukv-small
	mkdir -p $W
	export PYTHONUNBUFFERED=1
	{
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
		python3 -c 'import torch, transformers, tokenizers; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)'
		python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('$C/make-train-data.xz'), open('$W/make-train-data', 'wb'))"
		chmod +x $W/make-train-data
		words=$C/words_train_adj.txt,$C/words_train_noun.txt
		if [[ -n ${RESUME:-} ]]; then
			cp $C/ckpt/tokenizer.json $W/tokenizer.json
			resume=(--resume $C/ckpt)
		else
			# Tokenizer: broad documents + format samples (lengths estimated: no tokenizer yet).
			$W/make-train-data -corpus $C/train.jsonl.gz -words $words -seed 99 -n 3000 -max-length 1500 -prose-frac 0 >$W/tok-samples.jsonl
			python3 scripts/train_tokenizer.py --broad $C --broad-bytes 30000000 --samples $W/tok-samples.jsonl \
				--special "$SPECIAL" --out $W
			resume=()
		fi
		# SIGTERM (timeout) makes the trainer stop and save: a call cut short keeps its progress.
		timeout -s TERM $((${CALL_SECONDS:-590} - SECONDS - 45)) python3 scripts/train_model.py --tokenizer $W/tokenizer.json --out $W/model \
			--samples-cmd "$W/make-train-data -corpus $C/train.jsonl.gz -words $words -tokenizer $W/tokenizer.json -prose-frac 0.2" \
			--time-budget "${TIME_BUDGET:-880}" --run-seconds "${RUN_SECONDS:-400}" --phases "$PHASES" \
			--seed "${SEED:-1234}" $ARCH --lr 3e-3 --special "$SPECIAL" --chat-template scripts/chat_template.jinja \
			--eos-extra "<|end|>" --name lukv-small "${resume[@]}" ${EXTRA_TRAIN_ARGS:-}
		split -b 15M $W/model/model.safetensors "$OUTDIR/model.safetensors.part-"
		(cd $W/model && tar czf "$OUTDIR/lukv-small-files.tgz" config.json generation_config.json tokenizer.json \
			tokenizer_config.json train_state.json loss.csv train_log.json $(ls loss.png chat_template.jinja 2>/dev/null))
		if [[ -n ${GOLDENS:-} ]]; then
			python3 scripts/make_goldens.py --checkpoint $W/model $W/golden &&
				(cd $W && tar czf "$OUTDIR/lukv-small-golden.tgz" golden) || echo "goldens failed: $?"
		fi
		ls -l "$OUTDIR"
	} 2>&1 | tee "$OUTDIR/log"
	;;
*)
	echo "usage: small-model.sh prepare | train | adopt DIR" >&2
	exit 2
	;;
esac
