// How far a task got, in percent, measured from its work items: the manager computes it
// for the feed's task events (events.progress_of) and answers a page's question for the
// tasks it loaded; a task's page computes it from the items it reads. A task's own
// frame_current is the furthest frame any item reached, which runs ahead of the work
// done when items run side by side, so it is not used.

/**
 * A task's progress as the list shows it: completed is done; else what the manager
 * measured (`progress`, from the feed), or null while it is not known yet.
 * @param {any} task
 * @returns {number | null}
 */
export function progressOf(task) {
  if (task.status === "completed") return 100;
  return typeof task.progress === "number" ? task.progress : null;
}

/**
 * How far the work got, in percent: frames done of all (a completed piece counts its
 * whole range, a running one up to its current frame); pieces without frames count one
 * each when completed, else their parser's last percent (store/progress.py's measure).
 * @param {any[]} items
 * @returns {number | null}
 */
export function itemsProgress(items) {
  if (items.length === 0) return null;
  const framed = items.every((i) => i.frame_start != null && i.frame_end != null);
  if (!framed) {
    const share = (/** @type {any} */ i) => (i.status === "completed" ? 1 : Math.max(0, Math.min(100, i.percent ?? 0)) / 100);
    return (100 * items.reduce((sum, i) => sum + share(i), 0)) / items.length;
  }
  let done = 0;
  let all = 0;
  for (const item of items) {
    const size = item.frame_end - item.frame_start + 1;
    all += size;
    if (item.status === "completed") done += size;
    else if (item.frame_current != null) done += Math.max(0, Math.min(size, item.frame_current - item.frame_start + 1));
  }
  return all ? (100 * done) / all : null;
}
