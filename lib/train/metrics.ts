// metrics.ts: top-k accuracy from logits held in JavaScript.

/** Number of rows whose label is among the k largest logits. logits: row-major [N, K]. */
export function topKCorrect(logits: Float32Array, labels: Int32Array, k: number): number {
  const N = labels.length;
  const K = logits.length / Math.max(1, N);
  let correct = 0;
  for (let n = 0; n < N; n++) {
    const row = n * K;
    const target = logits[row + labels[n]];
    // rank of the label = number of classes with a strictly larger logit (ties count in the label's favour)
    let larger = 0;
    for (let j = 0; j < K && larger < k; j++) if (logits[row + j] > target) larger++;
    if (larger < k) correct++;
  }
  return correct;
}
