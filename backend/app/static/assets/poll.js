// Polling one endpoint: every second while the tab is visible, every five when it is hidden,
// at once when it becomes visible again, and never again once the data says it is done.

const VISIBLE_MS = 1000;
const HIDDEN_MS = 5000;

export function poll(fetchOnce, { onData, isDone, onDone = () => {}, onError }) {
  let timer = null;
  let stopped = false;

  async function tick() {
    timer = null;
    if (stopped) return;
    try {
      const data = await fetchOnce();
      if (stopped) return;
      onData(data);
      if (isDone(data)) {
        stop();
        onDone(data);
        return;
      }
    } catch (error) {
      if (stopped) return;
      onError(error);
      if (error.status === 404 || error.authFailure) {
        stop();
        return;
      }
    }
    timer = setTimeout(tick, document.hidden ? HIDDEN_MS : VISIBLE_MS);
  }

  function onVisibility() {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      tick();
    }
  }

  function stop() {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    document.removeEventListener("visibilitychange", onVisibility);
  }

  document.addEventListener("visibilitychange", onVisibility);
  timer = setTimeout(tick, document.hidden ? HIDDEN_MS : VISIBLE_MS);
  return { stop };
}
