import cliProgress from 'cli-progress';

/**
 * A progress bar on stderr for long steps (generation, loading, patching sweeps); silent when
 * stderr is not a terminal, so logs and tests stay clean.
 */
export function progress(label: string): ((done: number, total: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let bar: cliProgress.SingleBar | null = null;
  return (done, total) => {
    if (!bar) {
      bar = new cliProgress.SingleBar(
        {
          format: `${label} [{bar}] {value}/{total} {duration_formatted}`,
          stream: process.stderr,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0);
    }
    bar.update(done);
    if (done >= total) {
      bar.stop();
      bar = null;
    }
  };
}
