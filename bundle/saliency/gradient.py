"""Gradient-family methods on captum: gradient, SmoothGrad, Integrated Gradients, Smooth IG, guided backprop;
Expected Gradients in our own batched loop."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Saliency
from torch import nn

from bundle.saliency.base import (
    SaliencyMethod,
    budget_inputs,
    image_generators,
    inputs_per_pass,
    require_relu_modules,
    scoring_function,
)


class Gradient(SaliencyMethod):
    """Gradient of the class score with respect to the input (GRAD; Simonyan et al. 2014), signed."""

    name = "grad"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return Saliency(scoring_function(model, self.output)).attribute(images, target=target, abs=False)


class IntegratedGradients(SaliencyMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from a baseline (a constant, 0 = black, or a tensor).

    ``internal_batch_size`` bounds how many interpolated images go through the
    network at once (the memory budget); ``None`` sizes passes by ``PASS_VOXELS``.

    Args:
        n_steps: integration points along the path from the baseline to the image (50, as published).
        baseline: where the path starts: a constant intensity (0.0, black) or a tensor of the images' shape.
        integration: captum's integration rule: ``gausslegendre`` (default) or ``riemann_left``, ``riemann_right``,
            ``riemann_middle``, ``riemann_trapezoid``.
        internal_batch_size: interpolated inputs per pass (``None``: sized by ``PASS_VOXELS``, at least the batch).
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "ig"
    published = {"n_steps": 50}

    def __init__(
        self,
        n_steps: int = 50,
        baseline: float | torch.Tensor = 0.0,
        integration: str = "gausslegendre",
        internal_batch_size: int | None = None,
        output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_steps < 1:
            raise ValueError(f"n_steps must be positive, got {n_steps}")
        self.n_steps, self.baseline, self.integration = n_steps, baseline, integration
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ig = CaptumIG(scoring_function(model, self.output))
        return ig.attribute(
            images,
            baselines=self.baseline,
            target=target,
            n_steps=self.n_steps,
            method=self.integration,
            internal_batch_size=inputs_per_pass(images, self.internal_batch_size),
        )


class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al. 2017): mean gradient over noisy copies of the input.

    The noise standard deviation is ``noise_level`` times each image's intensity
    range (PAIR's ``stdev_spread``, default 0.15); ``nt_samples_batch_size``
    noisy copies of every image share a pass, by default as many as the voxel
    budget holds (:data:`~bundle.saliency.base.PASS_VOXELS`: 2 copies of a batch
    of 16 at 128², 32 of one image). Own noise loop instead of captum's
    ``NoiseTunnel``, which draws one noise stream for the whole batch: here each
    image's noise comes from its own seeded generator, one draw per copy, so its
    map depends neither on the other images in the batch nor on the copies per pass.

    Args:
        nt_samples: noisy copies averaged per image (50, as published).
        noise_level: the noise standard deviation as a fraction of each image's intensity range (0.15, PAIR's
            ``stdev_spread``).
        nt_samples_batch_size: noisy copies of every image per pass (``None``: as many as the voxel budget holds).
        seed: seeds each image's noise (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "smoothgrad"
    published = {"nt_samples": 50, "noise_level": 0.15}

    def __init__(
        self, nt_samples: int = 50, noise_level: float = 0.15, nt_samples_batch_size: int | None = None,
        seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if nt_samples < 1 or noise_level < 0:
            raise ValueError(f"need nt_samples >= 1 and noise_level >= 0, got {nt_samples}, {noise_level}")
        self.nt_samples, self.noise_level, self.nt_samples_batch_size, self.seed = (
            nt_samples, noise_level, nt_samples_batch_size, seed)

    def _base(self, model: nn.Module):
        return Saliency(scoring_function(model, self.output))

    def _base_kwargs(self, inputs: torch.Tensor) -> dict:
        return {"abs": False}

    def noisy_copies(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """The noisy copies of a batch, ``nt_samples_batch_size`` per image at a time, as (k, B, *image shape);
        each image's noise comes from its own generator (seeded by the method's seed and the image), one draw per
        copy, so the copies do not depend on how many share a pass."""
        shape = tuple(images.shape[1:])
        dims = tuple(range(1, images.ndim))
        detached = images.detach()
        sigma = self.noise_level * (detached.amax(dim=dims, keepdim=True) - detached.amin(dim=dims, keepdim=True))
        generators = image_generators(detached, self.seed)
        chunk = self.nt_samples_batch_size or budget_inputs(images) // images.shape[0] or 1
        for start in range(0, self.nt_samples, chunk):
            k = min(chunk, self.nt_samples - start)
            noise = torch.stack([torch.stack([torch.randn(shape, generator=g) for _ in range(k)]) for g in generators],
                                dim=1).to(images.device)
            yield images[None] + noise * sigma[None]

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = self._base(model)
        total = torch.zeros_like(images)
        for noisy in self.noisy_copies(images):
            k = noisy.shape[0]
            flat = noisy.reshape(k * images.shape[0], *images.shape[1:])
            attributions = base.attribute(flat, target=target.repeat(k), **self._base_kwargs(flat))
            total += attributions.reshape(noisy.shape).sum(dim=0)
        return total / self.nt_samples


class SmoothIntegratedGradients(SmoothGrad):
    """Smooth IG (SIG): Integrated Gradients averaged over noisy copies of the input, as SmoothGrad does.

    Args:
        nt_samples: noisy copies averaged per image (20, as published).
        noise_level: the noise standard deviation as a fraction of each image's intensity range (0.15, PAIR's
            ``stdev_spread``).
        n_steps: integration points of each noisy copy's Integrated Gradients (20, as published).
        baseline: the constant intensity each path starts from (0.0, black).
        nt_samples_batch_size: noisy copies of every image per pass (``None``: as many as the voxel budget holds).
        internal_batch_size: interpolated inputs per Integrated Gradients pass (``None``: sized by ``PASS_VOXELS``,
            at least the inputs it integrates).
        seed: seeds each image's noise (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "smoothig"
    published = {"nt_samples": 20, "n_steps": 20, "noise_level": 0.15}

    def __init__(
        self, nt_samples: int = 20, noise_level: float = 0.15, n_steps: int = 20, baseline: float = 0.0,
        nt_samples_batch_size: int | None = None, internal_batch_size: int | None = None, seed: int = 0,
        output: str = "logit",
    ) -> None:
        super().__init__(nt_samples, noise_level, nt_samples_batch_size, seed, output)
        self.n_steps, self.baseline, self.internal_batch_size = n_steps, baseline, internal_batch_size

    def _base(self, model: nn.Module):
        return CaptumIG(scoring_function(model, self.output))

    def _base_kwargs(self, inputs: torch.Tensor) -> dict:
        return {"n_steps": self.n_steps, "baselines": self.baseline,
                "internal_batch_size": inputs_per_pass(inputs, self.internal_batch_size)}


class GuidedBackprop(SaliencyMethod):
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass each ReLU module.

    Works on ``nn.ReLU`` modules (MONAI DenseNet121, and InceptionV3 as
    ``bundle.networks`` builds it). ReLUs called as functions cannot be hooked:
    a model without any ``nn.ReLU`` is refused; one that mixes both is guided
    only at its modules.
    """

    name = "gbp"

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        require_relu_modules(model)
        return CaptumGuidedBackprop(scoring_function(model, self.output)).attribute(images, target=target)


class ReferenceImages:
    """A fixed set of reference images (Expected Gradients' baseline distribution), printed and compared by a
    digest of their content, so a method's ``repr`` (its map-cache key and MLflow param) names them in one line.

    Args:
        images: the references, (R, C, *spatial).
    """

    def __init__(self, images: torch.Tensor | None = None) -> None:
        self._images = None if images is None else images.detach().float().contiguous()
        self._digest: str | None = None

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = self.load().detach().float().contiguous()
        return self._images

    def load(self) -> torch.Tensor:
        raise ValueError("ReferenceImages holds no images")

    @property
    def digest(self) -> str:
        """Hashed once: the method's repr, which names it, keys the map cache at every batch."""
        if self._digest is None:
            self._digest = hashlib.sha1(self.images.cpu().numpy().tobytes()).hexdigest()[:12]
        return self._digest

    def __len__(self) -> int:
        return self.images.shape[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceImages) and self.digest == other.digest

    def __repr__(self) -> str:
        return f"ReferenceImages(n={len(self)}, shape={tuple(self.images.shape[1:])}, sha1={self.digest})"


class TrainingImages(ReferenceImages):
    """The first ``n_images`` images of a dataset's training split, every class, preprocessed as the study's images;
    read when first used, so a config that names them reads no data until maps are computed.

    Args:
        dataset_name: the dataset reader (``dataset_name``).
        dataset_dir: the dataset folder (``dataset_dir``).
        transform: the study's image preprocessing (without ground truth), giving ``image`` tensors.
        n_images: how many training images (64).
        options: the reader's own settings (``dataset_options``).
    """

    def __init__(self, dataset_name: str, dataset_dir: str, transform: Callable, n_images: int = 64,
                 options: Mapping | None = None) -> None:
        super().__init__()
        if n_images < 1:
            raise ValueError(f"n_images must be positive, got {n_images}")
        self.dataset_name, self.dataset_dir, self.transform, self.n_images = dataset_name, dataset_dir, transform, n_images
        self.options = dict(options or {})

    def load(self) -> torch.Tensor:
        from bundle.data import load_dataset

        items = load_dataset(self.dataset_name, self.dataset_dir, split="train", limit=self.n_images,
                             options=self.options)
        if not items:
            raise ValueError(f"{self.dataset_dir}: no training images to draw Expected Gradients' references from")
        return torch.stack([torch.as_tensor(self.transform(item)["image"]) for item in items])


class ExpectedGradients(SaliencyMethod):
    """Expected Gradients (Erion et al. 2021): Integrated Gradients in expectation over baselines drawn from
    training images, one random point of each path per sample.

    Each of ``n_samples`` samples of an image x draws a reference x' (uniformly, with replacement) and a point
    alpha ~ U(0, 1), and contributes ``(x - x') * grad f(x' + alpha (x - x'))``; the map is their mean. This is
    captum's ``GradientShap`` without input noise (``stdevs=0``). Own loop because captum draws one random stream
    for the whole batch: here each image's draws come from its own seeded generator (a map does not depend on its
    batch) and the (image, sample) pairs of a batch share passes of ``internal_batch_size`` inputs.

    Args:
        references: the baseline distribution, (R, C, *spatial) images or :class:`ReferenceImages` (the configs
            give :class:`TrainingImages`, the first 64 training images of every class); required to compute maps.
        n_samples: (reference, point) samples per image (50; no canonical count: as many as IG's published steps,
            one gradient pass each; captum's ``GradientShap`` defaults to 5).
        internal_batch_size: inputs per pass (``None``: sized by ``PASS_VOXELS``).
        seed: seeds each image's draws (with the image's content), so a seed gives the same maps.
        output: the class score explained: ``logit`` (default) or ``probability`` (softmax).
    """

    name = "eg"
    published = {"n_samples": 50}

    def __init__(
        self, references: torch.Tensor | ReferenceImages | None = None, n_samples: int = 50,
        internal_batch_size: int | None = None, seed: int = 0, output: str = "logit",
    ) -> None:
        super().__init__(output)
        if n_samples < 1:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        if references is not None and not isinstance(references, ReferenceImages):  # a tensor
            references = ReferenceImages(torch.as_tensor(references))
        self.references, self.n_samples, self.internal_batch_size, self.seed = (
            references, n_samples, internal_batch_size, seed)

    def draws(self, n_references: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's ``n_samples`` reference indices (uniform, with replacement) and path points alpha ~ U(0, 1)."""
        indices = torch.randint(n_references, (self.n_samples,), generator=generator)
        return indices, torch.rand(self.n_samples, generator=generator)

    def attribute(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.references is None:
            raise ValueError("eg needs reference images (references): the configs give the first 64 training images")
        references = self.references.images.to(images.device, images.dtype)
        if references.shape[1:] != images.shape[1:]:
            raise ValueError(f"eg: references of shape {tuple(references.shape[1:])} for images of shape "
                             f"{tuple(images.shape[1:])}")
        drawn = [self.draws(len(references), g) for g in image_generators(images, self.seed)]
        indices = torch.stack([i for i, _ in drawn]).to(images.device).reshape(-1)  # (B * n), image-major
        alphas = torch.stack([a for _, a in drawn]).to(images.device, images.dtype).reshape(-1)
        scorer = scoring_function(model, self.output)
        b, n = images.shape[0], self.n_samples
        total = torch.zeros_like(images)
        view = (-1,) + (1,) * (images.ndim - 1)
        for chunk in torch.arange(b * n, device=images.device).split(budget_inputs(images, self.internal_batch_size)):
            rows, baselines = chunk // n, references[indices[chunk]]
            difference = images[rows] - baselines
            path = (baselines + alphas[chunk].reshape(view) * difference).requires_grad_(True)
            score = scorer(path).gather(1, target[rows][:, None]).sum()
            total.index_add_(0, rows, difference * torch.autograd.grad(score, path)[0])
        return total / n
