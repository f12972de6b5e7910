// How the call's tiles use the window: an even grid that fills #tiles for
// 1 to 25 people (landscape or portrait), or one big tile (a screen share,
// a pinned tile, or in big rooms the active speaker) with everyone else in
// a strip below it. Tiles are placed absolutely from computed rectangles, so
// the layout is exact and testable; video inside a tile is cropped to fit
// (object-fit: cover), so tiles may deviate a little from the video's shape.

const GAP = 8;
// Tile shapes allowed when filling the space: from square (a face, cropped
// from the sides) to 16:9.
const NARROWEST = 1;
const WIDEST = 16 / 9;
// From this many tiles on, the active speaker gets the big tile.
export const BIG_ROOM = 7;
const STRIP_SHARE = 0.2;
const STRIP_MIN = 90;
const STRIP_MAX = 200;
const STRIP_TILE_MIN_WIDTH = 100;

// The best even grid for `n` tiles in a `width` x `height` box: the column
// count that gives the tiles the largest total area, tiles between 1:1 and
// 16:9 wide. Returns {cols, rows, w, h}.
export function bestGrid(n, width, height, gap = GAP) {
  let best = { cols: 1, rows: 1, w: 0, h: 0 };
  let bestArea = -1;
  for (let cols = 1; cols <= Math.max(1, n); cols++) {
    const rows = Math.ceil(n / cols);
    const cellW = (width - gap * (cols - 1)) / cols;
    const cellH = (height - gap * (rows - 1)) / rows;
    if (cellW <= 0 || cellH <= 0) continue;
    let w = Math.min(cellW, cellH * WIDEST);
    const h = Math.min(cellH, w / NARROWEST);
    w = Math.min(w, h * WIDEST);
    const area = n * w * h;
    if (area > bestArea) {
      bestArea = area;
      best = { cols, rows, w, h };
    }
  }
  return best;
}

// Rectangles ({x, y, w, h}) for `n` tiles in an even grid, centred, the
// last row centred too.
export function gridRects(n, width, height, gap = GAP) {
  const { cols, rows, w, h } = bestGrid(n, width, height, gap);
  const top = (height - (rows * h + (rows - 1) * gap)) / 2;
  const rects = [];
  for (let i = 0; i < n; i++) {
    const row = Math.floor(i / cols);
    const inRow = row === rows - 1 ? n - row * cols : cols;
    const left = (width - (inRow * w + (inRow - 1) * gap)) / 2;
    rects.push({ x: left + (i % cols) * (w + gap), y: top + row * (h + gap), w, h });
  }
  return rects;
}

// One big rectangle and a strip of `n` small ones below it; small tiles that
// do not fit (narrower than STRIP_TILE_MIN_WIDTH) get `null` (not shown).
export function stageRects(n, width, height, gap = GAP) {
  const stripH = n === 0 ? 0 : Math.max(STRIP_MIN, Math.min(STRIP_MAX, height * STRIP_SHARE));
  const stage = { x: 0, y: 0, w: width, h: height - (n ? stripH + gap : 0) };
  let w = stripH * WIDEST;
  const fitAll = (width - gap * (n - 1)) / Math.max(1, n);
  w = Math.max(Math.min(w, fitAll), Math.min(STRIP_TILE_MIN_WIDTH, width));
  const shown = Math.max(1, Math.floor((width + gap) / (w + gap)));
  const count = Math.min(n, shown);
  const left = (width - (count * w + (count - 1) * gap)) / 2;
  const strip = [];
  for (let i = 0; i < n; i++) {
    strip.push(i < count ? { x: left + i * (w + gap), y: height - stripH, w, h: stripH } : null);
  }
  return { stage, strip };
}

// The live layout of #tiles.
export function createGrid(container, { you }) {
  // `log`: the last `speakers` messages with their arrival (Date.now()),
  // for troubleshooting and tests.
  // `staged`: the last other person who spoke; keeps the stage through
  // pauses in big rooms.
  const state = { pinned: null, speakers: [], staged: null, frame: 0, log: [] };

  const tiles = () => [...container.querySelectorAll(':scope > .tile')];
  const idOf = (tile) => (tile.classList.contains('local') ? you() : tile.dataset.participant);

  // The tile that gets the stage, or null for an even grid.
  function featured(all) {
    const screens = all.filter((t) => t.classList.contains('screen'));
    if (screens.length) return screens[screens.length - 1];
    const pinned = all.find((t) => t.dataset.key === state.pinned);
    if (pinned) return pinned;
    if (all.length >= BIG_ROOM && state.staged) {
      const tile = all.find((t) => !t.classList.contains('screen') && idOf(t) === state.staged);
      if (tile) return tile;
    }
    return null;
  }

  function place(tile, rect) {
    tile.classList.toggle('offstage', !rect);
    if (!rect) return;
    tile.style.left = `${Math.round(rect.x)}px`;
    tile.style.top = `${Math.round(rect.y)}px`;
    tile.style.width = `${Math.floor(rect.w)}px`;
    tile.style.height = `${Math.floor(rect.h)}px`;
  }

  function render() {
    state.frame = 0;
    const all = tiles();
    const width = container.clientWidth;
    const height = container.clientHeight;
    if (!all.length || !width || !height) return;
    for (const t of all) {
      t.dataset.key = t.classList.contains('screen') ? `screen:${t.dataset.screenOf}` : t.dataset.participant;
      t.classList.toggle('pinned', t.dataset.key === state.pinned);
      t.tabIndex = 0;
      t.title = t.dataset.key === state.pinned ? 'Click to unpin' : 'Click to pin to the big tile';
      t.classList.toggle('speaking', !t.classList.contains('screen') && state.speakers.includes(idOf(t)));
    }
    const big = featured(all);
    container.dataset.layout = big ? 'stage' : 'grid';
    for (const t of all) t.classList.toggle('stage', t === big);
    if (!big) {
      gridRects(all.length, width, height).forEach((r, i) => place(all[i], r));
      return;
    }
    const rest = all.filter((t) => t !== big);
    const { stage, strip } = stageRects(rest.length, width, height);
    place(big, stage);
    rest.forEach((t, i) => place(t, strip[i]));
  }

  function schedule() {
    if (!state.frame) state.frame = requestAnimationFrame(render);
  }

  new ResizeObserver(schedule).observe(container);
  new MutationObserver(schedule).observe(container, { childList: true });
  // Click a tile (or press Enter on it) to pin it, again to unpin it.
  const togglePin = (e) => {
    const tile = e.target.closest('.tile');
    if (!tile || !container.contains(tile)) return;
    state.pinned = state.pinned === tile.dataset.key ? null : tile.dataset.key;
    render();
  };
  container.addEventListener('click', togglePin);
  container.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' && e.key !== ' ') return;
    e.preventDefault();
    togglePin(e);
  });

  return {
    render,
    schedule,
    // The server's `speakers`: highlight them, and in big rooms stage the loudest.
    setSpeakers(list) {
      state.speakers = list;
      state.staged = list.find((id) => id !== you()) || state.staged;
      state.log.push({ at: Date.now(), list });
      if (state.log.length > 100) state.log.shift();
      for (const t of tiles()) {
        const speaking = !t.classList.contains('screen') && list.includes(idOf(t));
        t.classList.toggle('speaking', speaking);
      }
      schedule();
    },
    get pinned() { return state.pinned; },
    get log() { return state.log; },
  };
}
