// Hand-written kernels whose cycles are known, to validate estimated cycles (benchmarks/counting/mca.py)
// before they are trusted on ggml's code. Each loop body is one translated block (straight-line code ending
// in the loop branch), run x0 times.
//
// sdot_chain(n):   32 SDOTs per pass, each accumulating into v0: a dependency chain, latency-bound
//                  (per pass: 32 x the accumulate latency of SDOT).
// smmla_stream(n): 32 SMMLAs per pass into 16 accumulators (v16-v31, two rounds): no chain longer than the
//                  pipes' depth, throughput-bound (per pass: 32 / SMMLAs issued per cycle).
    .arch armv8.6-a+i8mm+dotprod
    .text

    .globl sdot_chain
    .type sdot_chain, %function
sdot_chain:
    movi v0.4s, #0
1:
    .rept 32
    sdot v0.4s, v1.16b, v2.16b
    .endr
    subs x0, x0, #1
    b.ne 1b
    ret
    .size sdot_chain, . - sdot_chain

    .globl smmla_stream
    .type smmla_stream, %function
smmla_stream:
1:
    .rept 2
    smmla v16.4s, v1.16b, v2.16b
    smmla v17.4s, v1.16b, v2.16b
    smmla v18.4s, v1.16b, v2.16b
    smmla v19.4s, v1.16b, v2.16b
    smmla v20.4s, v1.16b, v2.16b
    smmla v21.4s, v1.16b, v2.16b
    smmla v22.4s, v1.16b, v2.16b
    smmla v23.4s, v1.16b, v2.16b
    smmla v24.4s, v1.16b, v2.16b
    smmla v25.4s, v1.16b, v2.16b
    smmla v26.4s, v1.16b, v2.16b
    smmla v27.4s, v1.16b, v2.16b
    smmla v28.4s, v1.16b, v2.16b
    smmla v29.4s, v1.16b, v2.16b
    smmla v30.4s, v1.16b, v2.16b
    smmla v31.4s, v1.16b, v2.16b
    .endr
    subs x0, x0, #1
    b.ne 1b
    ret
    .size smmla_stream, . - smmla_stream

    .section .note.GNU-stack,"",%progbits
