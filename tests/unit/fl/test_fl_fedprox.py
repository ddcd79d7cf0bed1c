"""FedProx: server is FedAvg, the client adds mu/2 * ||w - w_g||^2."""

import pytest
import torch

from resonfl.fl import FedProx, proximal_term


def test_proximal_term_value_by_hand() -> None:
    w = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    w_g = {
        "a": torch.tensor([0.0, 0.0]),
        "b": torch.tensor([[1.0]]),
        "bn.running_mean": torch.ones(1),
    }
    # mu/2 * ((1-0)^2 + (2-0)^2 + (3-1)^2) = 0.25 * 9 = 2.25 ; the global's buffer is ignored
    assert proximal_term(w, w_g, mu=0.5).item() == pytest.approx(2.25)


def test_proximal_term_gradient_is_mu_times_difference() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    proximal_term([w], [torch.tensor([0.0, 4.0])], mu=0.5).backward()
    # d/dw mu/2 (w - w_g)^2 = mu (w - w_g) = 0.5 * [1, -2]
    assert torch.equal(w.grad, torch.tensor([0.5, -1.0]))


def test_proximal_term_sequences_must_have_equal_length() -> None:
    with pytest.raises(ValueError):
        proximal_term([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)], mu=1.0)


def test_client_args_carry_mu() -> None:
    assert FedProx({"mu": 0.1}).client_args() == {"fedprox_mu": 0.1}


def test_server_side_is_fedavg() -> None:
    agg = FedProx({"mu": 1.0})
    agg.reset({"w": torch.zeros(1)}, 0)
    agg.accept("a", {"w": torch.tensor([2.0])}, 1)
    agg.accept("b", {"w": torch.tensor([6.0])}, 3)
    assert torch.equal(agg.aggregate()["w"], torch.tensor([5.0]))
