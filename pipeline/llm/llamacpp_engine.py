"""Continuous batching on llama.cpp: many sequences decoded together on the CPU.

One GGUF model, one llama.cpp context with ``slots`` sequences sharing its KV
cache, one thread that owns them. Requests wait in a queue; whenever a slot
is free, the next sequence takes it: its prompt is decoded (in chunks of
``n_batch`` tokens), and from then on every step decodes one new token for
every busy slot in a single ``llama_decode`` call. Decoding several sequences
at once reads the weights once per step for all of them, which is where the
speed comes from on a CPU (at one sequence, the weights' memory traffic
dominates).

* A request for ``n`` completions becomes ``n`` sequences; those admitted
  together decode the prompt once and copy its KV cache to the others, and
  one admitted later (when a slot frees) copies it from a sibling still
  running, decoding only the prompt's last token again. Each
  sequence has a KV stream of its own (``ctx_per_slot`` cells), so a decode
  step attends over each sequence's own cells rather than over every slot's.
* llama.cpp decodes a batch that spans several KV streams in runs of
  consecutive stream ids, one pass over the weights per run. So each step
  lists its sequences in stream order, a freed stream goes to the next job
  (lowest first), and when no job waits the highest sequences move down into
  free streams (:meth:`LlamaCppEngine._compact`). In the demo's responses
  stage (16 slots, 4 samples a prompt, continuous admission) steps in
  admission order ran at about 35 tokens/s; in stream order, 56-59.
* Sampling per sequence, with the meaning the other backends give it:
  temperature 0 is greedy; otherwise temperature, then top-p, then a draw
  from a generator seeded with ``seed + i`` for the i-th completion (random
  when no seed). No top-k or min-p. ``repetition_penalty`` (when not 1)
  divides positive logits (multiplies negative ones) of every token already
  in the prompt or the answer, as transformers does.
* A sequence ends with ``"stop"`` at an end-of-generation token or a stop
  string (the text is cut before it), with ``"length"`` at ``max_tokens`` or
  when its slot's context (``ctx_per_slot`` tokens) is full.

llama.cpp's threads spin while they wait for each other, so a context with
more threads than free cores slows to a crawl: the server sizes ``threads``
before it starts (see :mod:`pipeline.llm.llamacpp_backend`).

Weight repacking: llama.cpp can move weights into "extra" buffer types laid
out for a CPU's matrix units. On CPUs with Intel AMX (Sapphire Rapids and
later) its AMX buffer crashes the process at the first decode of a Q4_K
model (llama.cpp issue #20824, seen here), so ``repack=None`` (auto) turns
extra buffers off on CPUs whose flags list AMX and leaves llama.cpp's
default elsewhere.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class SequenceJob:
    """One completion to generate: prompt tokens, sampling settings, and (when done) its result."""

    tokens: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    group: object = None  # jobs of one request share it: admitted together, they share the prompt
    text: str = ""
    finish_reason: str = ""
    completion_tokens: int = 0
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Slot:
    """A busy sequence in the KV cache."""

    seq: int
    job: SequenceJob
    sampler: object
    pos: int
    last_token: int = -1
    pieces: bytearray = field(default_factory=bytearray)
    checked: int = 0


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether this CPU's flags (``/proc/cpuinfo``, or the text given) list Intel AMX tiles."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    return any(line.startswith("flags") and " amx_tile" in line for line in cpuinfo.splitlines())


def use_repacking(repack: bool | None, cpuinfo: str | None = None) -> bool:
    """Whether llama.cpp may repack weights into extra buffers: as asked, else (None) not on AMX CPUs."""
    return (not cpu_has_amx(cpuinfo)) if repack is None else repack


def _group_key(job: SequenceJob) -> int:
    """Which request a job belongs to (jobs of one request share their prompt)."""
    return id(job.group) if job.group is not None else id(job)


class LlamaCppEngine:
    """A GGUF model served to many sequences at once by one decoding thread."""

    def __init__(self, model_path: str, *, threads: int, slots: int, ctx_per_slot: int, n_batch: int = 512,
                 repack: bool | None = None, shared_kv: bool = False, fast_attention: bool = True) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        params = L.llama_model_default_params()
        self.repack = use_repacking(repack)
        params.use_extra_bufts = self.repack
        self.model = L.llama_model_load_from_file(model_path.encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp cannot load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.slots = slots
        self.ctx_per_slot = min(ctx_per_slot, L.llama_model_n_ctx_train(self.model))
        self.n_batch = n_batch
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.ctx_per_slot * slots
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = slots
        cparams.n_threads = cparams.n_threads_batch = threads
        # one KV stream per sequence: attention then reads a sequence's own cells, not every slot's (in one shared
        # stream a decode step attends over all of them, masked, which doubled the cost of long answers here);
        # a prompt decoded once is still copied to its sibling sequences, stream to stream
        # (``shared_kv=True`` keeps the single shared stream, for comparison: benchmarks/llamacpp_kv.py)
        cparams.kv_unified = shared_kv
        if fast_attention:
            # plain attention over an 8-bit K cache (V stays f16): on this 2-core CPU, 16 sequences of ~500-token
            # prompts generated 66 tokens/s this way against 35 with llama.cpp's default (flash attention, f16
            # K and V), whose per-cell kernel dominated each step once answers grew long (benchmarks/llamacpp_kv.py)
            cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            cparams.type_k = L.GGML_TYPE_Q8_0
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp cannot create a context for {model_path}")
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(max(n_batch, slots), 0, 1)
        self.queue: queue.Queue[SequenceJob] = queue.Queue()
        self.busy: dict[int, _Slot] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llamacpp-engine", daemon=True)
        self.stats = {"steps": 0, "generated_tokens": 0, "prompt_tokens": 0, "prompt_tokens_reused": 0, "moves": 0}

    # -- text <-> tokens ---------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of ``text`` (special tokens written in the text are parsed as such)."""
        data = text.encode()
        capacity = len(data) + 16
        buf = (self.L.llama_token * capacity)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, True)
        if n < 0:
            buf = (self.L.llama_token * -n)()
            n = self.L.llama_tokenize(self.vocab, data, len(data), buf, -n, add_special, True)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (special tokens render as nothing unless ``special``)."""
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def chat_template(self) -> str | None:
        """The chat template stored in the GGUF file, if any."""
        raw = self.L.llama_model_chat_template(self.model, None)
        return raw.decode() if raw else None

    def special_text(self, which: str) -> str:
        """The text of the bos or eos token ('' when the model has none)."""
        token = getattr(self.L, f"llama_vocab_{which}")(self.vocab)
        return self.piece(token, special=True).decode(errors="replace") if token >= 0 else ""

    # -- the loop ----------------------------------------------------------------
    def start(self) -> "LlamaCppEngine":
        """Start the decoding thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the decoding thread (unfinished jobs end with an error)."""
        self._stopping.set()
        self._thread.join(timeout=30)

    def submit(self, jobs: list[SequenceJob]) -> None:
        """Queue jobs (one request's jobs share a ``group``); wait on each job's ``done``."""
        for job in jobs:
            self.queue.put(job)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._admit()
                if self.queue.empty():
                    self._compact()
                if not self.busy:
                    time.sleep(0.005)
                    continue
                self._step()
            except Exception as e:  # keep serving: fail the jobs in flight, clear the cache
                log.exception("engine step failed")
                for slot in list(self.busy.values()):
                    self._finish(slot, "stop", error=f"{type(e).__name__}: {e}")
        for slot in list(self.busy.values()):
            self._finish(slot, "stop", error="server stopping")

    def _admit(self) -> None:
        """Give free slots to queued jobs; jobs of one request admitted together share one prompt decode."""
        free = [s for s in range(self.slots) if s not in self.busy]
        admitted: list[SequenceJob] = []
        while len(admitted) < len(free):
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            admitted.append(job)
        groups: dict[int, list[SequenceJob]] = {}
        for job in admitted:
            groups.setdefault(_group_key(job), []).append(job)
        for jobs in groups.values():
            seqs = [free.pop(0) for _ in jobs]
            self._start_sequences(jobs, seqs)

    def _compact(self) -> None:
        """Move the highest busy sequences down into free streams below them, so the busy streams are consecutive.

        llama.cpp decodes a batch over separate KV streams in runs of consecutive stream ids (one pass over the
        weights per run), so busy sequences 0-4 and 6-15 cost two passes a step, and the few sequences left at
        the end of a workload, scattered, cost one pass each. A move copies the stream (a few tens of MB, once)
        and frees the old one. Called when no job is waiting (a waiting job fills the lowest free stream).
        """
        L = self.L
        while self.busy:
            top = max(self.busy)
            free = next((s for s in range(top) if s not in self.busy), None)
            if free is None:
                return
            slot = self.busy.pop(top)
            L.llama_memory_seq_rm(self.memory, free, -1, -1)
            L.llama_memory_seq_cp(self.memory, top, free, -1, -1)
            L.llama_memory_seq_rm(self.memory, top, -1, -1)
            slot.seq = free
            self.busy[free] = slot
            self.stats["moves"] += 1

    def _start_sequences(self, jobs: list[SequenceJob], seqs: list[int]) -> None:
        """Put the shared prompt into the new sequences, sample each first token.

        The prompt is decoded once into the first sequence and copied to the others; when a sibling of an earlier
        admission (same request) is still running, its stream already holds the prompt, so it is copied from there
        and only the prompt's last token is decoded again (for the logits of the first new token).
        """
        L = self.L
        tokens = jobs[0].tokens
        if not tokens:
            for job in jobs:
                self._fail(job, "the prompt is empty")
            return
        if len(tokens) >= self.ctx_per_slot:
            for job in jobs:
                self._fail(job, f"prompt has {len(tokens)} tokens; the context per slot is {self.ctx_per_slot}")
            return
        for seq in seqs:
            L.llama_memory_seq_rm(self.memory, seq, -1, -1)
        group = _group_key(jobs[0])
        sibling = next((s.seq for s in self.busy.values() if _group_key(s.job) == group), None)
        if sibling is not None:
            last_indices = self._copy_prompt(sibling, tokens, seqs)
        else:
            last_indices = [self._decode_prompt(tokens, seqs[0])] * len(seqs)
            for seq in seqs[1:]:
                L.llama_memory_seq_cp(self.memory, seqs[0], seq, -1, -1)
        for job, seq, index in zip(jobs, seqs, last_indices):
            slot = _Slot(seq=seq, job=job, sampler=self._sampler(job), pos=len(tokens))
            self.busy[seq] = slot
            self._take(slot, L.llama_sampler_sample(slot.sampler, self.ctx, index))

    def _decode_prompt(self, tokens: list[int], seq: int) -> int:
        """Decode a whole prompt into ``seq`` in chunks; returns the batch index of its last token's logits."""
        last_index = 0
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill_batch([(tok, start + i, seq, start + i == len(tokens) - 1) for i, tok in enumerate(chunk)])
            if self.L.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError("llama_decode failed on a prompt (KV cache full?)")
            last_index = len(chunk) - 1
        self.stats["prompt_tokens"] += len(tokens)
        return last_index

    def _copy_prompt(self, source: int, tokens: list[int], seqs: list[int]) -> list[int]:
        """Copy a running sibling's stream into ``seqs``, keep its prompt but the last token, decode that token."""
        L = self.L
        for seq in seqs:
            L.llama_memory_seq_cp(self.memory, source, seq, -1, -1)
            L.llama_memory_seq_rm(self.memory, seq, len(tokens) - 1, -1)
        self._fill_batch([(tokens[-1], len(tokens) - 1, seq, True) for seq in seqs])
        if L.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed on a copied prompt")
        self.stats["prompt_tokens_reused"] += len(tokens) * len(seqs)
        return list(range(len(seqs)))

    def _sampler(self, job: SequenceJob):
        """A sampler chain for one sequence: penalty, then greedy or temperature + top-p + seeded draw."""
        L = self.L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if job.repetition_penalty != 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
                self.n_vocab, self.ctx_per_slot, job.repetition_penalty, 0.0, 0.0))
            for tok in job.tokens:
                L.llama_sampler_accept(chain, tok)
        if job.temperature == 0.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            seed = job.seed if job.seed is not None else random.getrandbits(32)
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(job.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(job.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed % 2**32))
        return chain

    def _fill_batch(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Put (token, position, sequence, wants logits) entries into the reusable batch."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)

    def _step_order(self) -> list[_Slot]:
        """The busy sequences in the order a step decodes them: by stream id."""
        return [self.busy[seq] for seq in sorted(self.busy)]

    def _step(self) -> None:
        """Decode one token for every busy sequence (in stream order: see the module docstring) and sample the next."""
        L = self.L
        slots = self._step_order()
        self._fill_batch([(s.last_token, s.pos, s.seq, True) for s in slots])
        if L.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed (KV cache full?)")
        self.stats["steps"] += 1
        for i, slot in enumerate(slots):
            slot.pos += 1
            self._take(slot, L.llama_sampler_sample(slot.sampler, self.ctx, i))

    def _take(self, slot: _Slot, token: int) -> None:
        """Append a sampled token to its sequence, or end the sequence (end token, stop string, limits)."""
        job = slot.job
        if self.L.llama_vocab_is_eog(self.vocab, token):
            return self._finish(slot, "stop")
        job.completion_tokens += 1
        self.stats["generated_tokens"] += 1
        slot.pieces += self.piece(token)
        slot.last_token = token
        if job.stop:
            text = slot.pieces.decode(errors="replace")
            start = max(0, slot.checked - max(len(s) for s in job.stop) - 4)  # 4: a character still incomplete
            cut = min((i for i in (text.find(s, start) for s in job.stop) if i >= 0), default=-1)
            if cut >= 0:
                job.text = text[:cut]
                return self._finish(slot, "stop", keep_text=True)
            slot.checked = len(text)
        if job.completion_tokens >= job.max_tokens or slot.pos + 1 >= self.ctx_per_slot:
            return self._finish(slot, "length")

    def _finish(self, slot: _Slot, reason: str, keep_text: bool = False, error: str | None = None) -> None:
        job = slot.job
        if not keep_text:
            job.text = slot.pieces.decode(errors="replace")
        job.finish_reason = reason
        job.error = error
        self.L.llama_sampler_free(slot.sampler)
        self.L.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        del self.busy[slot.seq]
        job.done.set()

    @staticmethod
    def _fail(job: SequenceJob, message: str) -> None:
        job.error = message
        job.done.set()
