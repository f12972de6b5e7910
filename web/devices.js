// Camera and microphone choice: the device lists, and opening the device a
// sender switches to. The switch itself is a replaceTrack in app.js: same
// sender, SSRC and m-section, so no renegotiation and no new track at the
// subscribers.

// Fills the camera and microphone selects with the devices the browser
// lists, the one `localStream` uses now selected. A select with one entry is
// disabled.
export async function listDevices(localStream, selects) {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [['videoinput', selects.camera], ['audioinput', selects.mic]]) {
    const current = localStream.getTracks().find((t) => (kind === 'videoinput' ? t.kind === 'video' : t.kind === 'audio'));
    const currentId = current && current.getSettings().deviceId;
    select.replaceChildren();
    devices.filter((d) => d.kind === kind).forEach((d, i) => {
      const label = d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`;
      const option = new Option(label, d.deviceId);
      option.selected = d.deviceId === currentId;
      select.append(option);
    });
    select.disabled = select.options.length < 2;
  }
}

// Longest wait for a fresh camera's first frame before switching anyway.
const FIRST_FRAME_WAIT_MS = 3000;

// Opens `deviceId` for `kind` ('video' with the `camera` constraints). A
// camera's track is returned only once it has produced its first frame:
// getUserMedia resolves as soon as the device is opened, and a capturer can
// take hundreds of milliseconds more to deliver (measured up to 1.7 s with
// Chromium's fake camera on a loaded 2-core machine). Handing the encoder a
// track with no frames yet would freeze every subscriber on the old
// camera's last frame for that long; waiting here keeps the old camera
// flowing until the new one can take over.
export async function openDevice(kind, deviceId, camera) {
  const constraints = kind === 'video' ? { video: { ...camera, deviceId: { exact: deviceId } } } : { audio: { deviceId: { exact: deviceId } } };
  const track = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
  if (kind === 'video') await firstFrame(track);
  return track;
}

function firstFrame(track) {
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  video.srcObject = new MediaStream([track]);
  let timer;
  const rendered = new Promise((resolve) => {
    timer = setTimeout(resolve, FIRST_FRAME_WAIT_MS);
    if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(() => resolve());
    else video.addEventListener('loadeddata', () => resolve(), { once: true });
  });
  video.play().catch(() => {});
  return rendered.finally(() => {
    clearTimeout(timer);
    video.srcObject = null;
  });
}
