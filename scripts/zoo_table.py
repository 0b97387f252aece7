"""Print the README's table of shipped zoo models (population models in a second table), from the cards."""

from __future__ import annotations

from robcurve.zoo import card, zoo_names


def knob(c: dict) -> str:
    if c.get("adversarial_training"):
        return f"FGSM-RS, L∞ {c['adversarial_training']['eps']:g}"
    if c.get("label_smoothing"):
        return f"label smoothing {c['label_smoothing']:g}"
    return "none"


def main() -> None:
    pop = [n for n in zoo_names() if card(n).get("population")]
    print("| model | family | params | epochs | knob | test acc (10k) | PGD-20 L∞ 0.1 acc (500) | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for n in pop:
        c = card(n)
        rob = c["robust_acc"]["acc"]
        print(f"| `zoo:{n}` | {c['family']} | {c['params']:,} | {c['epochs']} | {knob(c)} | {100 * c['test_acc']:.2f}% | "
              f"{'n/a' if rob is None else f'{100 * rob:.1f}%'} | {c['training']['time_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
