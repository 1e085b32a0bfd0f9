// kioskd screen: renders the daemon's snapshots (Server-Sent Events from /events) and sends
// the visitor's touches to /api/*. No libraries, no CDN: everything ships with kioskd.
"use strict";

const TEXTS = {
  en: {
    state: {
      idle: "Press Talk to start", connecting: "Connecting…", listening: "Listening — speak now",
      speaking: "The assistant is speaking", reconnecting: "Reconnecting…",
      offline: "Offline — please try again later", error: "Out of order", closed: "Closed",
    },
    talk: "Talk", end: "End", send: "Send", typeLabel: "Or type:", visitor: "You", agent: "Assistant",
    like: "This was helpful", dislike: "This was not helpful", bigger: "Larger text",
    privacy: "The microphone is on: what you say is sent to the assistant to answer you. Nothing is kept on this kiosk.",
    hint: "Ask me anything. Press Talk, or type your question below.",
    thanks: "Thank you for your feedback.", failed: "That did not work, please try again.",
    lost: "Lost contact with the kiosk; retrying…",
  },
  de: {
    state: {
      idle: "Zum Starten „Sprechen“ drücken", connecting: "Verbinde…", listening: "Ich höre zu — bitte sprechen",
      speaking: "Der Assistent spricht", reconnecting: "Verbinde erneut…",
      offline: "Offline — bitte später erneut versuchen", error: "Außer Betrieb", closed: "Geschlossen",
    },
    talk: "Sprechen", end: "Beenden", send: "Senden", typeLabel: "Oder tippen:", visitor: "Sie", agent: "Assistent",
    like: "Das war hilfreich", dislike: "Das war nicht hilfreich", bigger: "Größere Schrift",
    privacy: "Das Mikrofon ist an: Was Sie sagen, geht an den Assistenten, damit er antworten kann. Dieser Kiosk speichert nichts.",
    hint: "Fragen Sie mich etwas. Drücken Sie „Sprechen“ oder tippen Sie Ihre Frage unten ein.",
    thanks: "Danke für Ihre Rückmeldung.", failed: "Das hat nicht geklappt, bitte erneut versuchen.",
    lost: "Verbindung zum Kiosk verloren; neuer Versuch…",
  },
  fr: {
    state: {
      idle: "Appuyez sur Parler pour commencer", connecting: "Connexion…", listening: "Je vous écoute — parlez",
      speaking: "L’assistant parle", reconnecting: "Reconnexion…",
      offline: "Hors ligne — réessayez plus tard", error: "Hors service", closed: "Fermé",
    },
    talk: "Parler", end: "Terminer", send: "Envoyer", typeLabel: "Ou écrivez :", visitor: "Vous", agent: "Assistant",
    like: "C’était utile", dislike: "Ce n’était pas utile", bigger: "Texte plus grand",
    privacy: "Le micro est actif : ce que vous dites est envoyé à l’assistant pour vous répondre. Rien n’est gardé sur cette borne.",
    hint: "Posez-moi une question. Appuyez sur Parler ou écrivez ci-dessous.",
    thanks: "Merci pour votre avis.", failed: "Cela n’a pas marché, réessayez.",
    lost: "Contact perdu avec la borne ; nouvel essai…",
  },
  es: {
    state: {
      idle: "Pulse Hablar para empezar", connecting: "Conectando…", listening: "Le escucho — hable",
      speaking: "El asistente está hablando", reconnecting: "Reconectando…",
      offline: "Sin conexión — inténtelo más tarde", error: "Fuera de servicio", closed: "Cerrado",
    },
    talk: "Hablar", end: "Terminar", send: "Enviar", typeLabel: "O escriba:", visitor: "Usted", agent: "Asistente",
    like: "Fue útil", dislike: "No fue útil", bigger: "Texto más grande",
    privacy: "El micrófono está activo: lo que diga se envía al asistente para responderle. Este quiosco no guarda nada.",
    hint: "Pregúnteme lo que quiera. Pulse Hablar o escriba abajo.",
    thanks: "Gracias por su opinión.", failed: "No funcionó, inténtelo de nuevo.",
    lost: "Se perdió el contacto con el quiosco; reintentando…",
  },
};

const $ = (id) => document.getElementById(id);
let texts = TEXTS.en;
let snapshot = null;
let clockOffset = 0; // page clock − daemon clock, in seconds
const announced = new Set();
let revealTimer = null;

function t(key) { return texts[key] || TEXTS.en[key]; }

function setLanguage(language) {
  const code = (language || "en").toLowerCase().split(/[-_]/)[0];
  texts = TEXTS[code] || TEXTS.en;
  document.documentElement.lang = code || "en";
  $("say-label").textContent = t("typeLabel");
  $("say-send").textContent = t("send");
  $("like").setAttribute("aria-label", t("like"));
  $("like").title = t("like");
  $("dislike").setAttribute("aria-label", t("dislike"));
  $("dislike").title = t("dislike");
  $("bigger").setAttribute("aria-label", t("bigger"));
  $("bigger").title = t("bigger");
  $("privacy-text").textContent = t("privacy");
}

function daemonNow() { return Date.now() / 1000 - clockOffset; }

// How much of an agent caption is spoken by now: all of it unless the audio is aligned.
function visibleText(c) {
  if (c.role !== "agent" || !c.words_ms) return { text: c.text, done: true };
  const words = c.text.split(/\s+/).filter(Boolean);
  if (c.audio_started === null) return { text: "", done: false };
  let elapsed = (daemonNow() - c.audio_started) * 1000;
  const cut = c.cut_ms;
  if (cut !== null && cut !== undefined) elapsed = Math.min(elapsed, cut);
  let n = 0;
  while (n < words.length && c.words_ms[n] <= elapsed) n += 1;
  const stopped = cut !== null && cut !== undefined && elapsed >= cut;
  return { text: words.slice(0, n).join(" "), done: n === words.length || stopped };
}

function renderCaptions() {
  const list = $("captions");
  const captions = snapshot ? snapshot.captions : [];
  const keep = new Set(captions.map((c) => String(c.id)));
  for (const li of [...list.children]) if (!keep.has(li.dataset.id)) li.remove();
  let revealing = false;
  captions.forEach((c, index) => {
    let li = list.querySelector(`li[data-id="${c.id}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.id = String(c.id);
      const who = document.createElement("span");
      who.className = "who";
      const body = document.createElement("span");
      body.className = "text";
      li.append(who, body);
      if (index >= list.children.length) list.append(li); else list.insertBefore(li, list.children[index]);
    }
    li.className = `${c.role}${c.final ? "" : " tentative"}`;
    li.querySelector(".who").textContent = c.role === "visitor" ? t("visitor") : t("agent");
    const shown = visibleText(c);
    li.querySelector(".text").textContent = shown.text || "…";
    if (!shown.done) revealing = true;
    const key = `${c.id}:${c.text}`;
    if (c.final && shown.done && !announced.has(key)) {
      announced.add(key);
      const line = document.createElement("p");
      line.textContent = `${li.querySelector(".who").textContent}: ${c.text}`;
      $("announce").append(line);
    }
  });
  if (captions.length === 0) { $("announce").replaceChildren(); announced.clear(); }
  $("hint").textContent = captions.length === 0 && snapshot && !snapshot.in_conversation ? t("hint") : "";
  const main = document.querySelector("main");
  main.scrollTop = main.scrollHeight;
  if (revealing && revealTimer === null) {
    revealTimer = setInterval(renderCaptions, 50);
  } else if (!revealing && revealTimer !== null) {
    clearInterval(revealTimer);
    revealTimer = null;
  }
}

function render() {
  if (!snapshot) return;
  const light = snapshot.light || "idle";
  $("banner").dataset.light = light;
  $("state").textContent = t("state")[light] || light;
  $("privacy").hidden = !snapshot.mic_live;
  $("privacy-text").textContent = snapshot.notice || t("privacy");
  const talk = $("talk");
  talk.textContent = snapshot.in_conversation ? t("end") : t("talk");
  talk.classList.toggle("end", snapshot.in_conversation);
  talk.disabled = light === "closed";
  for (const id of ["like", "dislike"]) $(id).disabled = !snapshot.in_conversation;
  $("say-text").disabled = light === "closed" || light === "offline";
  $("say-send").disabled = $("say-text").disabled;
  renderCaptions();
}

async function post(path, body) {
  try {
    const reply = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const answer = await reply.json();
    $("notice").textContent = answer.ok ? "" : (answer.error || t("failed"));
    return answer.ok;
  } catch (err) {
    $("notice").textContent = t("failed");
    return false;
  }
}

function connect() {
  const source = new EventSource("/events");
  source.onmessage = (message) => {
    const next = JSON.parse(message.data);
    clockOffset = Date.now() / 1000 - next.now;
    if (!snapshot || next.language !== snapshot.language) setLanguage(next.language);
    snapshot = next;
    if ($("notice").textContent === t("lost")) $("notice").textContent = "";
    render();
  };
  source.onerror = () => { $("notice").textContent = t("lost"); };
}

document.addEventListener("DOMContentLoaded", () => {
  setLanguage(document.documentElement.lang);
  if (localStorage.getItem("kioskd-bigger") === "1") {
    document.documentElement.classList.add("bigger");
    $("bigger").setAttribute("aria-pressed", "true");
  }
  $("bigger").addEventListener("click", () => {
    const on = document.documentElement.classList.toggle("bigger");
    $("bigger").setAttribute("aria-pressed", String(on));
    localStorage.setItem("kioskd-bigger", on ? "1" : "0");
  });
  $("talk").addEventListener("click", () => post(snapshot && snapshot.in_conversation ? "/api/end" : "/api/talk"));
  $("say").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("say-text").value.trim();
    if (!text) return;
    if (await post("/api/say", { text })) $("say-text").value = "";
  });
  for (const id of ["like", "dislike"]) {
    $(id).addEventListener("click", async () => {
      if (await post("/api/feedback", { rating: $(id).dataset.rating })) $("notice").textContent = t("thanks");
    });
  }
  connect();
});
