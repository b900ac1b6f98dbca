# ruff: noqa
# The medium benchmark search written the plain Ray Tune way, in the style of ../shared/reference/ray_tune_recipe.py
# (a DataLoader, a tune.report after every batch, ASHA on the batch loss), over the space of
# search_spaces/digits.py: 1..3 hidden layers of 16..256 units, lr, dropout, weight decay, batch size, optimizer.
# Same data and split as hpsearch (digits, 70/15/15 stratified with seed 0, standardised on the training part).
# Usage: python bench/ray_tune_digits.py [TRIALS] [EPOCHS] [STORAGE_DIR]
import os, sys, time
t0 = time.time()
import numpy as np, torch, torch.nn as nn, torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
N = int(sys.argv[1]) if len(sys.argv) > 1 else 24
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
features, target = load_digits(return_X_y=True)
rest, f_test, t_rest, t_test = train_test_split(features, target, test_size=0.15, random_state=0, stratify=target)
f_train, f_val, t_train, t_val = train_test_split(rest, t_rest, test_size=0.15 / 0.85, random_state=0, stratify=t_rest)
scaler = StandardScaler().fit(f_train)
x_train = torch.from_numpy(scaler.transform(f_train)).float(); y_train = torch.from_numpy(t_train).long()
x_val = torch.from_numpy(scaler.transform(f_val)).float(); y_val = torch.from_numpy(t_val).long()
torch.manual_seed(0); np.random.seed(0)
def make_net(config):
    layers, width = [], 64
    for i in range(config["n_layers"]):
        units = config[f"units_{i}"]
        layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(config["dropout"])]; width = units
    return nn.Sequential(*layers, nn.Linear(width, 10))
def make_optimizer(config, net):
    name, kw = config["optimizer"], dict(lr=config["lr"], weight_decay=config["weight_decay"])
    if name == "sgd": return optim.SGD(net.parameters(), momentum=0.9, **kw)
    if name == "rmsprop": return optim.RMSprop(net.parameters(), momentum=0.9, **kw)
    return (optim.AdamW if name == "adamw" else optim.Adam)(net.parameters(), **kw)
log_units = lambda _: int(round(np.exp(np.random.uniform(np.log(16), np.log(256)))))
config = {"n_layers": tune.randint(1, 4), "units_0": tune.sample_from(log_units), "units_1": tune.sample_from(log_units),
          "units_2": tune.sample_from(log_units), "lr": tune.loguniform(1e-4, 1e-1), "dropout": tune.uniform(0.0, 0.5),
          "weight_decay": tune.loguniform(1e-6, 1e-2), "batch_size": tune.choice([32, 64, 128]),
          "optimizer": tune.choice(["adam", "adamw", "sgd", "rmsprop"])}
def train_model(config, epochs=EPOCHS):
    network = make_net(config); criterion = nn.CrossEntropyLoss(); optimizer = make_optimizer(config, network)
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=config["batch_size"], shuffle=True)
    val_loss, val_accuracy = float("nan"), float("nan")
    for epoch in range(epochs):
        network.train()
        for data, target in train_loader:
            optimizer.zero_grad(); loss = criterion(network(data), target); loss.backward(); optimizer.step()
            tune.report({"loss": loss.item(), "val_loss": val_loss, "val_accuracy": val_accuracy, "epoch": epoch})
        network.eval()
        with torch.no_grad():
            out = network(x_val); val_loss = criterion(out, y_val).item(); val_accuracy = (out.argmax(1) == y_val).float().mean().item()
    tune.report({"loss": loss.item(), "val_loss": val_loss, "val_accuracy": val_accuracy, "epoch": epochs})
batches = int(np.ceil(len(x_train) / 32)) * EPOCHS
scheduler = ASHAScheduler(metric="loss", mode="min", max_t=batches + 1, grace_period=int(np.ceil(len(x_train) / 32)), reduction_factor=3)
tuner = tune.Tuner(tune.with_resources(train_model, {"cpu": 1}), param_space=config,
                   tune_config=tune.TuneConfig(num_samples=N, scheduler=scheduler),
                   run_config=tune.RunConfig(storage_path=sys.argv[3] if len(sys.argv) > 3 else os.path.abspath("ray_results"), verbose=0))
res = tuner.fit()
best = res.get_best_result("val_loss", "min", "last")
print("best", best.config, best.metrics["val_loss"], "trials", len(res), "wall", round(time.time() - t0, 1))
