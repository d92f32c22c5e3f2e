// progress.ts: the training progress bar on stderr (cli-progress): epoch, step, loss, accuracy, MAC ratio,
// images/s and ETA. Off when verbose is false; on a non-terminal it prints a line every few seconds.
import * as cliProgress from 'cli-progress';

export interface ProgressValues {
  epoch: string;
  loss: string;
  acc: string;
  macs: string;
  ips: string;
}

export class ProgressBar {
  private bar: cliProgress.SingleBar | null = null;
  constructor(private readonly enabled: boolean, private readonly label = 'train') {}

  start(total: number, values: ProgressValues): void {
    if (!this.enabled) return;
    this.bar = new cliProgress.SingleBar(
      {
        format: `${this.label} {epoch} |{bar}| {value}/{total} | loss {loss} | acc {acc} | MACs {macs} | {ips} img/s | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: false,
        noTTYOutput: true,
        notTTYSchedule: 5000,
        etaBuffer: 50,
        barsize: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, values);
  }

  update(step: number, values: ProgressValues): void {
    this.bar?.update(step, values);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
