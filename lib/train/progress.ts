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

const NOT_TTY_INTERVAL_MS = 5000;

export class ProgressBar {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = 0;
  constructor(private readonly enabled: boolean, private readonly label = 'train') {}

  start(total: number, values: ProgressValues): void {
    if (!this.enabled) return;
    this.bar = new cliProgress.SingleBar(
      {
        format: `${this.label} {epoch} |{bar}| {value}/{total} | loss {loss} | acc {acc} | MACs {macs} | {ips} img/s | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: false,
        noTTYOutput: true,
        notTTYSchedule: NOT_TTY_INTERVAL_MS,
        etaBuffer: 50,
        barsize: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, values);
    this.lastLine = Date.now();
  }

  update(step: number, values: ProgressValues): void {
    if (!this.bar) return;
    this.bar.update(step, values);
    // on a non-terminal cli-progress prints from a timer, which never fires inside a synchronous training loop:
    // print the line ourselves at the same interval
    if (!process.stderr.isTTY && Date.now() - this.lastLine >= NOT_TTY_INTERVAL_MS) {
      this.bar.render();
      this.lastLine = Date.now();
    }
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
