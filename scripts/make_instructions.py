"""Write graft/datasets/instructions/{train,validation}.jsonl: a small, real instruction dataset.

Every answer is a checkable fact (capitals, chemical symbols, arithmetic, unit conversions,
opposites, spelling) in one consistent answer style, so a short SFT run visibly lowers the loss
on held-out questions. Written for Graft; Apache-2.0 like the rest of the repository.

    python scripts/make_instructions.py        # deterministic: the same files every time
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "graft" / "datasets" / "instructions"
SYSTEM = "You are a concise assistant. Answer in one sentence."

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasília", "Egypt": "Cairo",
    "Kenya": "Nairobi", "India": "New Delhi", "China": "Beijing", "Mexico": "Mexico City", "Peru": "Lima",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens",
    "Turkey": "Ankara", "Argentina": "Buenos Aires", "Chile": "Santiago", "Ireland": "Dublin",
    "Austria": "Vienna", "Hungary": "Budapest", "Nigeria": "Abuja", "Vietnam": "Hanoi", "Thailand": "Bangkok",
    "South Korea": "Seoul", "Denmark": "Copenhagen", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Morocco": "Rabat", "Ghana": "Accra", "Colombia": "Bogotá", "Cuba": "Havana",
    "Iceland": "Reykjavik", "New Zealand": "Wellington",
}
SYMBOLS = {
    "hydrogen": "H", "helium": "He", "carbon": "C", "nitrogen": "N", "oxygen": "O", "sodium": "Na",
    "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "sulfur": "S", "chlorine": "Cl", "potassium": "K",
    "calcium": "Ca", "iron": "Fe", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "tin": "Sn", "gold": "Au",
    "mercury": "Hg", "lead": "Pb", "uranium": "U", "neon": "Ne", "argon": "Ar", "nickel": "Ni",
}
OPPOSITES = {
    "hot": "cold", "tall": "short", "early": "late", "happy": "sad", "light": "dark", "open": "closed",
    "fast": "slow", "full": "empty", "strong": "weak", "rich": "poor", "hard": "soft", "wet": "dry",
    "loud": "quiet", "old": "new", "thick": "thin", "win": "lose", "above": "below", "push": "pull",
    "begin": "end", "ancient": "modern",
}
WORDS = ["graft", "ray", "model", "token", "kernel", "python", "lemon", "planet", "river", "garden",
         "window", "silver", "rocket", "pencil", "butter", "forest", "bridge", "candle", "jacket", "market"]
UNITS = [("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("litres", "millilitres", 1000)]


def examples(rng: random.Random) -> list[dict[str, object]]:
    rows: list[tuple[str, str]] = []
    rows += [(f"What is the capital of {c}?", f"The capital of {c} is {k}.") for c, k in CAPITALS.items()]
    rows += [(f"What is the chemical symbol for {e}?", f"The chemical symbol for {e} is {s}.") for e, s in SYMBOLS.items()]
    rows += [(f"What is the opposite of '{w}'?", f"The opposite of '{w}' is '{o}'.") for w, o in OPPOSITES.items()]
    rows += [(f"Spell '{w}' backwards.", f"'{w}' backwards is '{w[::-1]}'.") for w in WORDS]
    for _ in range(40):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        rows.append((f"What is {a} {op} {b}?", f"{a} {op} {b} = {value}."))
    for big, small, factor in UNITS:
        for n in rng.sample(range(2, 30), 5):
            rows.append((f"Convert {n} {big} to {small}.", f"{n} {big} is {n * factor} {small}."))
    out: list[dict[str, object]] = []
    for question, answer in rows:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if rng.random() < 0.5:
            messages.insert(0, {"role": "system", "content": SYSTEM})
        out.append({"messages": messages})
    rng.shuffle(out)
    return out


def main() -> None:
    rows = examples(random.Random(20261201))
    n_val = len(rows) // 6
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("validation", rows[:n_val]), ("train", rows[n_val:])):
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
        print(f"{path}: {len(part)} examples")


if __name__ == "__main__":
    main()
