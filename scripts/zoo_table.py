"""Print the zoo as a Markdown table from the shipped model cards (for the README)."""

from robcurve.zoo import card, zoo_names

print("| model | family | params | epochs | adversarial training | test acc (10k) | PGD-20 L∞ 0.1 acc (500) | train time |")
print("|---|---|---|---|---|---|---|---|")
for n in zoo_names():
    c = card(n)
    at = c.get("adversarial_training")
    rob = c["robust_acc"]["acc"]
    print(f"| `zoo:{n}` | {c['family']} | {c['params']:,} | {c['epochs']} | {'FGSM-RS, L∞ ' + format(at['eps'], 'g') if at else 'none'} "
          f"| {100 * c['test_acc']:.2f}% | {'n/a' if rob is None else format(100 * rob, '.1f') + '%'} | {c['training']['time_s'] / 60:.0f} min |")
